"""Gradients reach the scorer from the task loss (through the key bias) and from the auxiliary loss."""

import torch
import torch.nn.functional as F

from videoprune.stts import (
    STTSScorer,
    build_layout,
    key_bias,
    key_bias_attn_mask,
    pack,
    packed_attention,
    scatter_back,
    select_tokens,
    temporal_aux_loss,
    window_mean,
)

T, HP, WP, WIDTH, POOL, HEADS = 3, 4, 4, 8, 2, 2


def scorer_grad_norm(scorer):
    return sum(p.grad.abs().sum().item() for p in scorer.parameters() if p.grad is not None)


def biased_block(x, bias, qkv):
    """One per-frame attention block with the STTS key bias: x (T, P, C) -> (T, P, C)."""
    q, k, v = qkv(x).view(T, -1, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias_attn_mask(bias))
    return out.transpose(1, 2).reshape(T, -1, WIDTH)


def test_task_loss_reaches_scorer_through_key_bias():
    """A task loss on the kept tokens reaches the scorer (the attention pool included) through the key bias, although
    the hard selection itself carries no gradient."""
    torch.manual_seed(0)
    scorer, qkv = STTSScorer(WIDTH, POOL, 16, 4), torch.nn.Linear(WIDTH, 3 * WIDTH)
    hidden = torch.randn(T, HP, WP, WIDTH)
    scores = scorer(hidden)
    out = biased_block(hidden.reshape(T, -1, WIDTH), key_bias(scores, POOL), qkv)
    # the hard selection + packing after the block carries no gradient; the task loss is on kept tokens
    sel = select_tokens(scores, 0.5, POOL)
    layout = build_layout(sel.keep_patches)
    kept_out = scatter_back(pack(out, layout), layout, (T, HP * WP, WIDTH))
    (kept_out**2).sum().backward()
    assert scorer_grad_norm(scorer) > 0
    assert scorer.q_proj.weight.grad.abs().sum() > 0  # through the attention pool too


def test_task_loss_without_the_bias_does_not_reach_scorer():
    """Control for the test above: the hard selection alone carries no gradient."""
    torch.manual_seed(0)
    scorer, qkv = STTSScorer(WIDTH, POOL, 16, 4), torch.nn.Linear(WIDTH, 3 * WIDTH)
    hidden = torch.randn(T, HP, WP, WIDTH)
    scores = scorer(hidden)
    out = biased_block(hidden.reshape(T, -1, WIDTH), torch.zeros(T, HP, WP), qkv)
    layout = build_layout(select_tokens(scores, 0.5, POOL).keep_patches)
    loss = (scatter_back(pack(out, layout), layout, (T, HP * WP, WIDTH)) ** 2).sum() + scores.sum() * 0
    loss.backward()
    assert scorer_grad_norm(scorer) == 0


def test_aux_loss_reaches_scorer_but_not_the_encoder_features():
    """The temporal auxiliary loss trains the scorer but sends no gradient into the encoder features."""
    torch.manual_seed(0)
    scorer = STTSScorer(WIDTH, POOL, 16, 4)
    hidden = torch.randn(T, HP, WP, WIDTH, requires_grad=True)
    loss = temporal_aux_loss(scorer(hidden.detach()), window_mean(hidden, POOL))
    loss.backward()
    assert scorer_grad_norm(scorer) > 0
    assert hidden.grad is None


def test_aux_loss_training_moves_scores_toward_the_target():
    """Sixty Adam steps on the auxiliary loss halve it, and a static frame ends up scoring lower than a moving one."""
    torch.manual_seed(0)
    scorer = STTSScorer(WIDTH, POOL, 16, 4)
    hidden = torch.randn(T, HP, WP, WIDTH)
    hidden[2] = hidden[1]  # frame 2 is static: its target is 0
    feats = window_mean(hidden, POOL)
    opt = torch.optim.Adam(scorer.parameters(), lr=1e-2)
    first = temporal_aux_loss(scorer(hidden), feats).item()
    for _ in range(60):
        opt.zero_grad()
        loss = temporal_aux_loss(scorer(hidden), feats)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    scores = scorer(hidden)
    assert scores[2].mean() < scores[1].mean()  # the static frame scores lower than the moving one
