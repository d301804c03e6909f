"""STTSConfig: defaults from the paper, help text on every field, ValueError naming the bad field."""

import dataclasses

import pytest

from videoprune.stts import STTS_METHODS, STTSConfig


def test_defaults_match_the_paper():
    cfg = STTSConfig()
    assert (cfg.ratio, cfg.prune_at, cfg.aux_loss_weight, cfg.method, cfg.ref_threshold) == (0.5, 3, 0.5, "learned", 0.85)
    assert cfg.pool is None and cfg.scorer_path is None


def test_every_field_has_help():
    helps = STTSConfig.help()
    assert set(helps) == {f.name for f in dataclasses.fields(STTSConfig)}
    assert all(isinstance(h, str) and h for h in helps.values())


@pytest.mark.parametrize(
    "field, value",
    [
        ("ratio", 1.0),
        ("ratio", -0.1),
        ("ratio", float("nan")),
        ("ratio", True),
        ("prune_at", -1),
        ("prune_at", 2.0),
        ("mlp_hidden", 0),
        ("attn_dim", 0),
        ("pool", 0),
        ("aux_loss_weight", -1.0),
        ("method", "tome"),
        ("ref_threshold", 1.5),
        ("seed", 0.5),
        ("scorer_path", ""),
    ],
)
def test_invalid_value_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        STTSConfig(**{field: value})


@pytest.mark.parametrize("method", STTS_METHODS)
def test_every_method_is_accepted(method):
    assert STTSConfig(method=method, ratio=0, pool=3).method == method
