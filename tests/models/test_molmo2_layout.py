"""Molmo2 pooling-index layout: built in the installed transformers' convention, converted to global indices."""

from __future__ import annotations

import pytest
import torch

import stts_builders as SB
from videoprune.models.molmo2_layout import to_global, video_pooling, window_indices

FRAMES = [2, 3]
SIDE, POOL = 6, 3
P = SIDE * SIDE
TOKENS = (SIDE // POOL) ** 2


def test_window_indices_are_pool_blocks_in_raster_order():
    """Window 0 of a 6x6 grid with pool 3 is the top-left 3x3 block, window 1 the top-right one."""
    win = window_indices(SIDE, SIDE, POOL)
    assert win[0].tolist() == [0, 1, 2, 6, 7, 8, 12, 13, 14]
    assert win[1].tolist() == [3, 4, 5, 9, 10, 11, 15, 16, 17]


def test_per_video_layout_restarts_at_zero_for_each_video():
    """Per-video indices of the second video equal those of a video alone; global ones are shifted by its offset."""
    per = video_pooling(FRAMES, SIDE, SIDE, POOL, per_video=True)
    glob = video_pooling(FRAMES, SIDE, SIDE, POOL, per_video=False)
    first = FRAMES[0] * TOKENS
    assert torch.equal(per[first:], video_pooling(FRAMES[1:], SIDE, SIDE, POOL, per_video=True))
    assert torch.equal(glob[first:], per[first:] + FRAMES[0] * P)


@pytest.mark.parametrize("per_video", [True, False])
def test_to_global_gives_the_global_layout(per_video):
    """Whatever the layout, to_global yields indices into all videos' patches concatenated."""
    pooling = video_pooling(FRAMES, SIDE, SIDE, POOL, per_video=per_video)
    got = to_global(pooling, [t * TOKENS for t in FRAMES], [t * P for t in FRAMES], per_video=per_video)
    assert torch.equal(got, video_pooling(FRAMES, SIDE, SIDE, POOL, per_video=False))


def test_to_global_keeps_padding_negative():
    """-1 marks a padding slot; the offset is not added to it."""
    pooling = video_pooling(FRAMES, SIDE, SIDE, POOL, per_video=True)
    pooling[-1, 0] = -1
    got = to_global(pooling, [t * TOKENS for t in FRAMES], [t * P for t in FRAMES], per_video=True)
    assert got[-1, 0] == -1


def test_detected_layout_matches_the_installed_model():
    """Two videos in one call through the UNPATCHED model equal each video encoded alone (layout detected)."""
    model = SB.build_molmo2()
    both = SB.molmo2_inputs([(2, 1), (3, 2)])
    frames = both["video_grids"][:, 0].tolist()
    with torch.no_grad():
        joint = model.model.get_video_features(both["pixel_values_videos"], both["video_token_pooling"],
                                               both["video_grids"]).pooler_output
        alone = []
        for i, pix in enumerate(both["pixel_values_videos"].split(frames)):
            pooling = video_pooling([frames[i]], SB.M_SIDE, SB.M_SIDE, SB.M_POOL)
            alone += model.model.get_video_features(pix, pooling, both["video_grids"][i:i + 1]).pooler_output
    for a, b in zip(joint, alone):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
