"""Temporal auxiliary loss: weight * MSE(score_t, 1 - cos(f_{t-1}, f_t)) on frames t >= 1."""

import torch
import torch.nn.functional as F

from videoprune.stts import temporal_aux_loss, temporal_target

T, H, W, C = 3, 2, 2, 5


def test_target_matches_cosine_definition():
    """The temporal target is 1 - cos(frame t, frame t-1) at every location."""
    f = torch.randn(T, H, W, C)
    expected = 1 - F.cosine_similarity(f[1:], f[:-1], dim=-1)
    torch.testing.assert_close(temporal_target(f), expected)


def test_static_video_target_is_zero():
    """A static video has a target of zero everywhere."""
    f = torch.randn(1, H, W, C).expand(T, H, W, C)
    assert torch.allclose(temporal_target(f), torch.zeros(T - 1, H, W), atol=1e-6)


def test_loss_value_ignores_frame_0_and_applies_weight():
    """The auxiliary loss is weight * mean squared error over frames 1 onward: frame 0's scores do not change it."""
    f = torch.randn(T, H, W, C)
    scores = torch.rand(T, H, W)
    other = scores.clone()
    other[0] = 1 - other[0]  # frame 0 scores must not matter
    expected = 0.5 * ((scores[1:] - temporal_target(f)) ** 2).mean()
    torch.testing.assert_close(temporal_aux_loss(scores, f), expected)
    torch.testing.assert_close(temporal_aux_loss(other, f), expected)
    torch.testing.assert_close(temporal_aux_loss(scores, f, weight=2.0), 4 * expected)


def test_target_is_detached():
    """The target is detached: the loss sends gradient to the scores of frames 1 onward only, never into the features.
    """
    f = torch.randn(T, H, W, C, requires_grad=True)
    scores = torch.rand(T, H, W, requires_grad=True)
    temporal_aux_loss(scores, f).backward()
    assert f.grad is None
    assert scores.grad is not None and bool(scores.grad[1:].abs().sum() > 0)
    assert bool((scores.grad[0] == 0).all())


def test_single_frame_gives_zero_loss_with_a_graph():
    """A single-frame video gives a loss of 0 that still backpropagates (zero gradients), so training code needs no
    special case."""
    scores = torch.rand(1, H, W, requires_grad=True)
    loss = temporal_aux_loss(scores, torch.randn(1, H, W, C))
    assert loss.item() == 0.0
    loss.backward()
    assert bool((scores.grad == 0).all())
