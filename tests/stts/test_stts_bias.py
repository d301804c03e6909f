"""Key bias: per-frame min-max rescale to [e^-2, 1], log -> [-2, 0]; frame 0 and images 0."""

import math

import pytest
import torch

from videoprune.stts import key_bias, key_bias_attn_mask, pooled_key_bias, upsample_to_patches

T, H, W, POOL = 3, 2, 3, 2


def test_bias_lies_in_minus_two_to_zero_and_hits_both_ends_per_frame():
    """The key bias lies in [-2, 0], and every frame after frame 0 reaches both ends: -2 at its lowest score, 0 at its
    highest."""
    b = pooled_key_bias(torch.rand(T, H, W))
    assert bool(((b >= -2 - 1e-6) & (b <= 0)).all())
    for t in range(1, T):
        assert b[t].min().item() == pytest.approx(-2.0, abs=1e-5)
        assert b[t].max().item() == 0.0


def test_bias_is_log_of_rescaled_score():
    """The bias equals log(e^-2 + (1 - e^-2) * r), r the frame's min-max rescaled score."""
    s = torch.rand(T, H, W)
    r = (s[1] - s[1].min()) / (s[1].max() - s[1].min())
    expected = torch.log(math.exp(-2) + (1 - math.exp(-2)) * r)
    torch.testing.assert_close(pooled_key_bias(s)[1], expected)


def test_normalisation_is_per_frame():
    """Rescaling is per frame: an affine change of one frame's scores leaves every bias unchanged."""
    s = torch.rand(T, H, W)
    scaled = s.clone()
    scaled[2] = scaled[2] * 0.1 + 0.5  # affine change of one frame leaves its bias unchanged
    torch.testing.assert_close(pooled_key_bias(scaled), pooled_key_bias(s), atol=1e-5, rtol=0)


def test_frame_0_and_images_and_flat_frames_get_zero():
    """Frame 0, a frame whose scores are all equal and every image get a bias of exactly 0, since none of them is
    ranked."""
    s = torch.rand(T, H, W)
    s[2] = 0.3
    b = pooled_key_bias(s)
    assert bool((b[0] == 0).all()) and bool((b[2] == 0).all())
    assert bool((pooled_key_bias(torch.rand(T, H, W), is_video=False) == 0).all())


def test_upsampling_gives_every_patch_its_window_value():
    """upsample_to_patches gives every patch the value of the pooled window that holds it."""
    pooled = torch.arange(T * H * W).float().reshape(T, H, W)
    up = upsample_to_patches(pooled, POOL)
    assert up.shape == (T, H * POOL, W * POOL)
    for i in range(H * POOL):
        for j in range(W * POOL):
            assert torch.equal(up[:, i, j], pooled[:, i // POOL, j // POOL])


def test_gradient_flows_to_scores_of_later_frames_only():
    """Gradients through the key bias reach the scores of every later frame and none of frame 0, whose bias is constant.
    """
    s = torch.rand(T, H, W, requires_grad=True)
    (key_bias(s, POOL) * torch.randn(T, H * POOL, W * POOL)).sum().backward()
    assert bool((s.grad[0] == 0).all())
    assert bool((s.grad[1:].abs().sum((1, 2)) > 0).all())


def test_attn_mask_broadcasts_over_heads_and_queries():
    """key_bias_attn_mask lays out one frame's patch bias along the keys with shape (T, 1, 1, keys), broadcasting over
    heads and queries."""
    b = key_bias(torch.rand(T, H, W), POOL)
    m = key_bias_attn_mask(b)
    assert m.shape == (T, 1, 1, H * W * POOL * POOL)
    assert torch.equal(m[1, 0, 0], b[1].reshape(-1))
