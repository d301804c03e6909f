"""Rules of KeepPlan and position bookkeeping (methods.md §1.3), checked against a per-row reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from videoprune.core.plan import build_plan
from videoprune.core.positions import PAD_POSITION, prune_positions, rope_deltas

MROPE_AXES = 3


@st.composite
def batches(draw):
    """Random batch: per row some padding, text and video placeholder tokens, plus a keep choice."""
    b = draw(st.integers(1, 4))
    length = draw(st.integers(2, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    side = draw(st.sampled_from(["left", "right"]))
    pads = torch.randint(0, length // 2 + 1, (b,), generator=g)
    attn = torch.ones(b, length, dtype=torch.long)
    for i, p in enumerate(pads.tolist()):
        if p:
            if side == "left":
                attn[i, :p] = 0
            else:
                attn[i, length - p :] = 0
    video = (torch.rand(b, length, generator=g) < 0.6) & attn.bool()
    keep = torch.rand(int(video.sum()), generator=g) < 0.5
    out_side = draw(st.sampled_from(["left", "right"]))
    return video, keep, attn, out_side, g


def reference_rows(video, keep, attn):
    """Per row, the source indices that survive, in order."""
    flat = iter(keep.tolist())
    rows = []
    for b in range(video.shape[0]):
        kept = []
        for j in range(video.shape[1]):
            is_video = bool(video[b, j])
            k = next(flat) if is_video else True
            if attn[b, j] and k:
                kept.append(j)
        rows.append(kept)
    return rows


@settings(max_examples=150, deadline=None)
@given(batches())
def test_plan_keeps_text_and_selected_video_in_order(batch):
    """Each pruned row holds exactly its real text tokens and kept video tokens, in original order."""
    video, keep, attn, side, _ = batch
    plan = build_plan(video, keep, attn, padding_side=side)
    rows = reference_rows(video, keep, attn)
    assert plan.pruned_length == max(len(r) for r in rows)
    for b, kept in enumerate(rows):
        real = plan.attention_mask[b].bool()
        assert plan.index[b][real].tolist() == kept
        n_pad = plan.pruned_length - len(kept)
        expected_mask = [0] * n_pad + [1] * len(kept) if side == "left" else [1] * len(kept) + [0] * n_pad
        assert plan.attention_mask[b].tolist() == expected_mask


@settings(max_examples=150, deadline=None)
@given(batches(), st.booleans())
def test_positions_are_the_unpruned_ids_of_kept_tokens(batch, mrope):
    """Pruned position ids equal the full sequence's ids at the kept sources; pads get PAD_POSITION."""
    video, keep, attn, side, g = batch
    b, length = video.shape
    shape = (MROPE_AXES, b, length) if mrope else (b, length)
    full = torch.randint(0, 100, shape, generator=g)
    plan = build_plan(video, keep, attn, padding_side=side)
    pruned = prune_positions(full, plan)
    rows = reference_rows(video, keep, attn)
    for i, kept in enumerate(rows):
        real = plan.attention_mask[i].bool()
        if mrope:
            assert torch.equal(pruned[:, i][:, real], full[:, i, kept])
            assert (pruned[:, i][:, ~real] == PAD_POSITION).all()
        else:
            assert torch.equal(pruned[i][real], full[i, kept])
            assert (pruned[i][~real] == PAD_POSITION).all()


@settings(max_examples=100, deadline=None)
@given(batches())
def test_rope_delta_continues_from_the_unpruned_next_position(batch):
    """rope_delta = max id of the row's real tokens + 1 - L', so decoding resumes after the full prompt."""
    video, keep, attn, side, g = batch
    b, length = video.shape
    full = torch.randint(0, 100, (MROPE_AXES, b, length), generator=g)
    plan = build_plan(video, keep, attn, padding_side=side)
    pruned = prune_positions(full, plan)
    deltas = rope_deltas(pruned, plan)
    for i, kept in enumerate(reference_rows(video, keep, attn)):
        if not kept:
            continue
        assert deltas[i, 0].item() == int(full[:, i, kept].max()) + 1 - plan.pruned_length


def test_text_after_video_keeps_its_unpruned_position():
    """A prompt [text, 6 video, text]: the trailing text's ids are unchanged after pruning 4 tokens."""
    video = torch.tensor([[False] + [True] * 6 + [False, False]])
    keep = torch.tensor([True, False, True, False, False, False])
    plan = build_plan(video, keep)
    pos = torch.arange(9).unsqueeze(0)
    assert prune_positions(pos, plan).tolist() == [[0, 1, 3, 7, 8]]
    assert rope_deltas(prune_positions(pos, plan), plan).tolist() == [[9 - 5]]


def test_gather_packs_embeddings_like_positions():
    """gather() applies the same layout to (B, L, D) embeddings."""
    video = torch.tensor([[False, True, True, True], [True, True, False, False]])
    keep = torch.tensor([True, False, True, False, True])
    attn = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    plan = build_plan(video, keep, attn, padding_side="left")
    emb = torch.arange(2 * 4 * 2).view(2, 4, 2).float()
    out = plan.gather(emb)
    assert out.shape == (2, 3, 2)
    assert out[0].tolist() == [emb[0, 0].tolist(), emb[0, 1].tolist(), emb[0, 3].tolist()]
    assert out[1, 1:].tolist() == [emb[1, 1].tolist(), emb[1, 2].tolist()]
    assert plan.attention_mask.tolist() == [[1, 1, 1], [0, 1, 1]]


def test_per_video_and_per_frame_counts():
    """With grids given, the plan records tokens before/after per video and kept per frame."""
    video = torch.ones(1, 4 + 8, dtype=torch.bool)
    keep = torch.tensor([True, True, False, True] + [True] * 4 + [False, True, False, False])
    plan = build_plan(video, keep, grid_thw=[(2, 2, 4), (2, 4, 4)], spatial_merge_size=2)
    first, second = plan.videos
    assert (first.tokens_before, first.tokens_after, first.kept_per_frame) == (4, 3, (2, 1))
    assert (second.tokens_before, second.tokens_after, second.kept_per_frame) == (8, 5, (4, 1))
    assert second.kept_fraction == pytest.approx(5 / 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(video_keep=torch.ones(3, dtype=torch.bool)), "shape \\(4,\\)"),
        (dict(video_keep=torch.ones(4)), "bool"),
        (dict(padding_side="middle"), "padding_side"),
        (dict(attention_mask=torch.ones(1, 5)), "attention_mask shape"),
        (dict(grid_thw=[(2, 2, 2), (1, 2, 2)], spatial_merge_size=2), "implies 3"),
    ],
)
def test_bad_plan_arguments_are_rejected(kwargs, match):
    """build_plan refuses a keep mask of the wrong length or dtype, an unknown padding_side, a misshapen attention_mask
    and a grid that disagrees with the video token count."""
    args = dict(video_token_mask=torch.ones(1, 4, dtype=torch.bool), video_keep=torch.ones(4, dtype=torch.bool))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        build_plan(**args)


def test_positions_with_wrong_shape_are_rejected():
    """prune_positions refuses position_ids whose shape does not match the plan's batch and sequence length."""
    plan = build_plan(torch.ones(1, 4, dtype=torch.bool), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="position_ids"):
        prune_positions(torch.zeros(3, 1, 5, dtype=torch.long), plan)
