"""'default' / 'default-uptrained' mean the embedded models in every loader, and bad names fail before loading."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from videoprune.hub import EMBEDDED  # noqa: E402

EMBEDDED_TYPE = "qwen2_5_vl"


def load_with_bench_speed(name):
    from videoprune.bench.configs import load_model

    return load_model(name)


def load_with_analyze(name):
    from videoprune.video.analyze import _load_model

    return _load_model(name)[0]


def load_with_train(name):
    from videoprune.train.config import TrainConfig
    from videoprune.train.trainer import _load

    return _load(TrainConfig(data="d.jsonl", model=name, output_dir="o"), print)[0]


def load_with_ask(name):
    from videoprune.bundle import load_bundle

    return load_bundle(name).model


LOADERS = [load_with_bench_speed, load_with_analyze, load_with_train, load_with_ask]


@pytest.mark.parametrize("load", LOADERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_embedded_names_load_the_embedded_checkpoint(load, name):
    """Every command's model loader (bench speed, analyze, train, ask) loads the embedded checkpoint for an embedded
    name."""
    model = load(name)
    assert model.config.model_type == EMBEDDED_TYPE
    assert model.config.name_or_path == str(EMBEDDED[name])


@pytest.mark.parametrize("load", LOADERS, ids=lambda f: f.__name__)
def test_a_missing_path_fails_naming_it(load):
    """Every command's model loader fails on a missing path with an error naming it."""
    with pytest.raises(FileNotFoundError, match="'./no/such/ckpt' does not exist"):
        load("./no/such/ckpt")
