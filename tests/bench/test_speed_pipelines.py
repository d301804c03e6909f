"""bench speed's inputs: --max-pixels is per frame for every Qwen family, and the fast pipeline's inputs match the default's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from videoprune.bench.configs import ARCHITECTURES, build_model, scale_config  # noqa: E402
from videoprune.bench.speed import SpeedConfig, _make_inputs  # noqa: E402
from videoprune.video import clip_from_frames  # noqa: E402

MAX_PIXELS = 200704  # the GPU check's budget: 272x640 frames keep their size class


@pytest.fixture(scope="module")
def qwen3():
    return build_model(scale_config(ARCHITECTURES["qwen3-vl-8b"], 0.0625))


def _clip(frames: int):
    return clip_from_frames(np.random.default_rng(0).integers(0, 256, (frames, 272, 640, 3), dtype=np.uint8), fps=25.0)


def test_qwen3_max_pixels_is_per_frame(qwen3):
    """Qwen3-VL frames are resized alike at 4 and 16 frames: the budget does not shrink as frames are added."""
    cfg = SpeedConfig(model="qwen3-vl-8b", scale=0.0625, frames="4", max_pixels=MAX_PIXELS)
    sizes = {n: _make_inputs(qwen3, cfg, _clip(n))[1].resized_hw for n in (4, 16)}
    assert sizes[4] == sizes[16]
    assert sizes[4][0] * sizes[4][1] <= MAX_PIXELS


def test_fast_pipeline_inputs_match_the_default_ones_on_cpu(qwen3):
    """On the CPU the fast pipeline gives the same ids and grids, and pixels within 2 uint8 steps."""
    cfg = SpeedConfig(model="qwen3-vl-8b", scale=0.0625, frames="4", max_pixels=MAX_PIXELS)
    a, _, _ = _make_inputs(qwen3, cfg, _clip(4), "default")
    b, _, _ = _make_inputs(qwen3, cfg, _clip(4), "fast")
    assert a.keys() == b.keys()
    for k in a:
        if k.startswith("pixel"):
            assert (a[k] - b[k]).abs().max() <= 2 / 255 / 0.5 + 1e-6  # std 0.5: 2 steps in normalised units
        else:
            assert torch.equal(a[k], b[k]), k
