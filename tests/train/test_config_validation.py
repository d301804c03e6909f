"""TrainConfig refuses bad rates, pixel budgets and frame counts with the messages every other entry point gives."""

from __future__ import annotations

import pytest

from videoprune import validate
from videoprune.train import TrainConfig

BASE = dict(data="train.jsonl", model="tiny:qwen2_5_vl", output_dir="runs/x")


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as e:
        fn(*args, **kwargs)
    return str(e.value)


@pytest.mark.parametrize("kw, expected", [
    (dict(stts_ratio=1.0), lambda: validate.check_rate(1.0, "stts_ratio")),
    (dict(export_rate=-0.5), lambda: validate.check_rate(-0.5, "export_rate")),
    (dict(min_pixels=5000, max_pixels=4000), lambda: validate.check_pixel_budget(5000, 4000)),
    (dict(num_frames=64), lambda: validate.check_num_frames(64, upper=32)),
    (dict(num_frames=0), lambda: validate.check_num_frames(0, upper=32)),
])
def test_train_config_uses_the_shared_validators(kw, expected):
    """Each bad value is refused when the config is built, with the shared validator's exact message."""
    assert _message(TrainConfig, **BASE, **kw) == _message(expected)
