"""STTSConfig: defaults from the paper, help text on every field, ValueError naming the bad field."""

import dataclasses

import pytest

from videoprune.stts import STTS_METHODS, STTSConfig


def test_defaults_match_the_paper():
    """STTSConfig's defaults are the paper's settings: ratio 0.5, prune at layer 3, aux weight 0.5, learned scorer,
    reference threshold 0.85."""
    cfg = STTSConfig()
    assert (cfg.ratio, cfg.prune_at, cfg.aux_loss_weight, cfg.method, cfg.ref_threshold) == (0.5, 3, 0.5, "learned", 0.85)
    assert cfg.pool is None and cfg.scorer_path is None


def test_every_field_has_help():
    """STTSConfig.help() gives a non-empty help string for exactly its fields, since the CLI builds flags from them."""
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
    """Each invalid STTSConfig value (ratio out of [0, 1) or a bool, non-int or negative sizes, unknown method,
    threshold above 1, non-int seed, empty scorer path) raises an error naming the field."""
    with pytest.raises(ValueError, match=field):
        STTSConfig(**{field: value})


@pytest.mark.parametrize("method", STTS_METHODS)
def test_every_method_is_accepted(method):
    """Every name in STTS_METHODS is a valid STTSConfig method."""
    assert STTSConfig(method=method, ratio=0, pool=3).method == method
