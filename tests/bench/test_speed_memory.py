"""`bench speed` prices a run before building it: too big is refused naming a --scale that fits."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("transformers")

from videoprune.bench import speed  # noqa: E402
from videoprune.bench.configs import ARCHITECTURES, build_model, scale_config  # noqa: E402
from videoprune.bench.speed import SpeedConfig, check_memory, estimate_memory, noise_warnings, run_speed  # noqa: E402

GIB = 2**30
FULL_SIZE = dict(model="qwen2.5-vl-7b", scale=1.0)  # ~31 GiB of float32 weights


@pytest.fixture
def no_build(monkeypatch):
    """Any attempt to build or load a model fails the test."""
    def refuse(cfg):
        raise AssertionError("a model was built")

    monkeypatch.setattr(speed, "_build", refuse)


@pytest.mark.parametrize("available_gib", [1, 8])
def test_a_run_that_cannot_fit_is_refused_naming_a_scale_that_fits(monkeypatch, no_build, available_gib):
    """Under the estimate, run_speed raises a one-line ValueError naming --scale X, before building,
    and the run at scale X is estimated to fit."""
    monkeypatch.setattr(speed, "available_memory", lambda device: available_gib * GIB)
    cfg = SpeedConfig(**FULL_SIZE)
    with pytest.raises(ValueError) as err:
        run_speed(cfg, progress=False)
    msg = str(err.value)
    assert "\n" not in msg
    scale = float(re.search(r"--scale (\S+) ", msg).group(1))
    assert scale < 1
    smaller = estimate_memory(cfg, scale)
    assert smaller["weights"] + smaller["activations"] <= available_gib * GIB


def test_unknown_available_memory_never_refuses(monkeypatch):
    """Where free memory cannot be read, the run goes ahead (no guess either way)."""
    monkeypatch.setattr(speed, "available_memory", lambda device: None)
    assert check_memory(SpeedConfig(**FULL_SIZE)) is None


def test_an_unreadable_checkpoint_config_is_not_priced(tmp_path, monkeypatch):
    """A checkpoint whose config cannot be read gets no estimate, hence no refusal (loading reports the error)."""
    monkeypatch.setattr(speed, "available_memory", lambda device: 1)
    cfg = SpeedConfig(model=str(tmp_path))
    assert estimate_memory(cfg) is None
    check_memory(cfg)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_weights_estimate_is_the_built_models_parameter_bytes(name):
    """The weights estimate (counted on the meta device) equals the float32 model's parameter bytes."""
    cfg = SpeedConfig(model=name, scale=0.03)
    model = build_model(scale_config(ARCHITECTURES[name], 0.03))
    assert estimate_memory(cfg)["weights"] == sum(p.numel() * p.element_size() for p in model.parameters())


def test_activation_estimate_grows_with_frames():
    """More frames, more activations (KV cache and transients follow the token count)."""
    few = estimate_memory(SpeedConfig(frames="8"))["activations"]
    many = estimate_memory(SpeedConfig(frames="8,64"))["activations"]
    assert 0 < few < many


def test_without_scale_a_named_architecture_runs_at_a_quarter_and_a_checkpoint_at_full_size(tmp_path):
    """With no --scale, a named architecture is built at DEFAULT_SCALE 0.25 while a local checkpoint runs at full size
    1.0."""
    assert SpeedConfig().scale == speed.DEFAULT_SCALE == 0.25
    assert SpeedConfig(model=str(tmp_path)).scale == 1.0


@pytest.mark.parametrize("warmup, repeats, warns", [(0, 3, True), (1, 1, True), (1, 2, True), (0, 1, True),
                                                    (1, 3, False), (2, 5, False)])
def test_noise_warning_when_no_warmup_or_fewer_than_3_repeats(warmup, repeats, warns):
    """One one-line warning when warmup is 0 or repeats < 3; none otherwise."""
    got = noise_warnings(SpeedConfig(warmup=warmup, repeats=repeats))
    assert len(got) == int(warns)
    assert all("\n" not in w and "noise" in w for w in got)
