"""FFD packing, block-diagonal packed attention and scatter-back."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from videoprune.stts import build_layout, ffd_pack, kept_cu_seqlens, pack, pack_kept, packed_attention, scatter_back, unpack_kept

HEADS, HEAD_DIM, C = 2, 4, 3


# ---------------------------------------------------------------------------- references
def reference_ffd(sizes, cap):
    """Textbook FFD written independently: sort (size desc, index asc), first row with room."""
    items = sorted(((s, i) for i, s in enumerate(sizes) if s > 0), key=lambda x: (-x[0], x[1]))
    bins = []  # [load, [items]]
    for s, i in items:
        for b in bins:
            if b[0] + s <= cap:
                b[0] += s
                b[1].append(i)
                break
        else:
            bins.append([s, [i]])
    return [b[1] for b in bins]


def optimal_rows(sizes, cap):
    """Exhaustive minimum number of bins (branch and bound; fine for <= 8 items)."""
    items = sorted((s for s in sizes if s > 0), reverse=True)
    best = [len(items)]

    def go(i, loads):
        if len(loads) >= best[0]:
            return
        if i == len(items):
            best[0] = len(loads)
            return
        seen = set()
        for j, load in enumerate(loads):
            if load + items[i] <= cap and load not in seen:
                seen.add(load)
                loads[j] += items[i]
                go(i + 1, loads)
                loads[j] -= items[i]
        loads.append(items[i])
        go(i + 1, loads)
        loads.pop()

    go(0, [])
    return best[0]


def keep_from_counts(counts, cap, seed=0):
    """A (T, cap) keep mask with the given kept count per frame, at random positions."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.zeros(len(counts), cap, dtype=torch.bool)
    for t, n in enumerate(counts):
        keep[t, torch.randperm(cap, generator=g)[:n]] = True
    return keep


# ---------------------------------------------------------------------------- FFD
@pytest.mark.parametrize(
    "counts, cap, rows",
    [
        ([9, 5, 4, 6, 3, 7, 2], 9, 4),  # perfect fit: 9 | 7+2 | 6+3 | 5+4
        ([9, 3, 3, 3, 3, 3, 3], 9, 3),  # small frames share
        ([9, 5, 5, 5], 9, 4),  # nothing fits together
        ([4, 0, 0, 2], 4, 2),  # fully pruned frames take no row
        ([8, 4, 4, 4, 4, 4, 4], 8, 4),
    ],
)
def test_ffd_uses_the_minimum_number_of_rows_on_crafted_cases(counts, cap, rows):
    """On crafted frame sizes first-fit-decreasing packing reaches the optimal row count, and fully pruned frames take
    no row."""
    assert len(ffd_pack(counts, cap)) == rows == optimal_rows(counts, cap)


def test_ffd_is_not_always_optimal_and_the_test_bound_knows_it():
    """Capacity 10, sizes 4 4 3 3 3 3: FFD pairs the fours and opens 3 rows where 2 suffice."""
    sizes, cap = [4, 4, 3, 3, 3, 3], 10
    assert optimal_rows(sizes, cap) == 2  # 4+3+3 | 4+3+3
    assert len(ffd_pack(sizes, cap)) == 3  # FFD: 4+4 | 3+3+3 | 3
    assert len(ffd_pack(sizes, cap)) <= 11 / 9 * 2 + 6 / 9


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 9).flatmap(lambda cap: st.tuples(st.just(cap), st.lists(st.integers(0, cap), min_size=1, max_size=7))))
def test_ffd_equals_reference_ffd_and_respects_its_bound(case):
    """ffd_pack equals a plain reference FFD, stays within 11/9 OPT + 6/9 rows, never overfills a row and places each
    non-empty frame once."""
    cap, sizes = case
    rows = ffd_pack(sizes, cap)
    assert rows == reference_ffd(sizes, cap)
    opt = optimal_rows(sizes, cap)
    assert math.ceil(sum(sizes) / cap) <= opt <= len(rows) <= 11 / 9 * opt + 6 / 9 + 1e-9
    assert all(sum(sizes[i] for i in r) <= cap for r in rows)
    assert sorted(i for r in rows for i in r) == [i for i, s in enumerate(sizes) if s > 0]


# ---------------------------------------------------------------------------- layout
def test_layout_places_each_kept_token_exactly_once_in_raster_order_per_frame():
    """The packed layout places each kept token exactly once, in raster order within its frame, and numbers the kept
    tokens contiguously."""
    keep = keep_from_counts([6, 2, 3, 0, 4], 6)
    lay = build_layout(keep)
    assert lay.num_rows == 3 and lay.rows == ((0,), (4, 1), (2,))
    flat = keep.reshape(-1)
    placed = lay.dense_index[lay.is_output]
    assert sorted(placed.tolist()) == flat.nonzero().squeeze(1).tolist()
    for f in range(5):
        idx = lay.dense_index[lay.segment_ids == f]
        assert idx.tolist() == sorted(idx.tolist()) and bool((idx // 6 == f).all())
    assert lay.kept_index[lay.is_output].sort().values.tolist() == list(range(int(flat.sum())))


def test_cu_seqlens_cover_nonempty_frames_of_the_flat_kept_tokens():
    """cu_seqlens has one segment per non-empty frame over the flat kept tokens, and max_seqlen is the largest frame."""
    keep = keep_from_counts([4, 0, 2, 3], 4)
    assert build_layout(keep).cu_seqlens.tolist() == [0, 4, 6, 9]
    assert build_layout(keep).max_seqlen == 4
    assert kept_cu_seqlens(torch.tensor([0, 0])).tolist() == [0]


def test_attention_mask_is_block_diagonal_by_frame():
    """In a packed row a token attends only to tokens of its own frame: the mask is block-diagonal by frame."""
    lay = build_layout(keep_from_counts([4, 1, 2, 1], 4))
    seg = lay.segment_ids
    m = lay.attn_mask[:, 0]
    for r in range(lay.num_rows):
        for i in range(4):
            for j in range(4):
                assert bool(m[r, i, j]) == (int(seg[r, i]) == int(seg[r, j]))


# ---------------------------------------------------------------------------- attention + scatter
def frame_alone_reference(q, k, v, keep):
    """Per frame: attention among that frame's kept tokens only. q, k, v: (T, heads, P, d) dense."""
    out = torch.zeros_like(q)
    for t in range(q.shape[0]):
        idx = keep[t].nonzero().squeeze(1)
        if idx.numel():
            out[t][:, idx] = F.scaled_dot_product_attention(q[t][:, idx], k[t][:, idx], v[t][:, idx])
    return out


def to_tokens(x):
    """(T, heads, P, d) -> (T, P, heads*d)."""
    return x.transpose(1, 2).flatten(2)


def to_heads(x):
    """(R, L, heads*d) -> (R, heads, L, d)."""
    return x.unflatten(-1, (HEADS, HEAD_DIM)).transpose(1, 2)


@pytest.mark.parametrize("counts, cap", [([9, 5, 4, 6, 3, 7, 2], 9), ([4, 1, 1, 1, 0, 3], 4), ([6, 6], 6)])
def test_packed_attention_equals_each_frame_alone(counts, cap):
    """Packed attention over shared rows gives the same output as attending within each frame's kept tokens alone."""
    torch.manual_seed(0)
    keep = keep_from_counts(counts, cap, seed=1)
    q, k, v = (torch.randn(len(counts), HEADS, cap, HEAD_DIM) for _ in range(3))
    lay = build_layout(keep)
    po = packed_attention(*(to_heads(pack(to_tokens(x), lay)) for x in (q, k, v)), lay)
    dense = scatter_back(to_tokens(po), lay, (len(counts), cap, HEADS * HEAD_DIM))
    expected = to_tokens(frame_alone_reference(q, k, v, keep))
    torch.testing.assert_close(dense, expected, atol=1e-6, rtol=0)


def test_refilled_frame_attends_to_its_whole_frame_but_outputs_only_kept():
    """A frame alone in its row is refilled: it attends over its whole frame, outputs only its kept tokens, and cannot
    be packed from kept tokens alone."""
    torch.manual_seed(0)
    counts, cap = [4, 3, 2], 4  # FFD: 4 | 3 | 2 -> frames 1 and 2 alone in their rows
    keep = keep_from_counts(counts, cap, seed=2)
    q, k, v = (torch.randn(3, HEADS, cap, HEAD_DIM) for _ in range(3))
    lay = build_layout(keep, refill=True)
    assert lay.refilled.tolist() == [False, True, True] and lay.num_rows == 3
    po = packed_attention(*(to_heads(pack(to_tokens(x), lay)) for x in (q, k, v)), lay)
    dense = scatter_back(to_tokens(po), lay, (3, cap, HEADS * HEAD_DIM), fill=-7.0)
    full = to_tokens(F.scaled_dot_product_attention(q, k, v))  # each frame dense
    torch.testing.assert_close(dense[keep], full[keep], atol=1e-6, rtol=0)
    assert bool((dense[~keep] == -7.0).all())
    assert lay.is_output.sum() == keep.sum()
    with pytest.raises(ValueError, match="refilled"):
        pack_kept(torch.zeros(int(keep.sum()), C), lay)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6).flatmap(lambda cap: st.tuples(st.just(cap), st.lists(st.integers(0, cap), min_size=1, max_size=6))),
       st.booleans())
def test_scatter_back_inverts_packing(case, refill):
    """scatter_back undoes pack (pruned positions get the fill value) and unpack_kept / pack_kept round-trip the kept
    tokens, with or without refill."""
    cap, counts = case
    keep = keep_from_counts(counts, cap)
    x = torch.randn(len(counts), cap, C)
    lay = build_layout(keep, refill=refill)
    back = scatter_back(pack(x, lay), lay, x.shape, fill=0.0)
    torch.testing.assert_close(back, torch.where(keep.unsqueeze(-1), x, torch.zeros(())))
    torch.testing.assert_close(unpack_kept(pack(x, lay), lay), x[keep])
    if not refill:
        torch.testing.assert_close(pack_kept(x[keep], lay), pack(x, lay))


def test_scatter_back_is_differentiable():
    """scatter_back passes gradient to exactly the output slots of the packed tensor."""
    keep = keep_from_counts([3, 1], 3)
    lay = build_layout(keep)
    packed = torch.randn(lay.num_rows, 3, C, requires_grad=True)
    scatter_back(packed, lay, (2, 3, C)).sum().backward()
    assert torch.equal(packed.grad[..., 0], lay.is_output.float())


def test_ratio_0_packing_is_the_identity_and_attention_is_the_dense_per_frame_attention():
    """The do-nothing path: nothing pruned -> one frame per row, in order, and dense results."""
    torch.manual_seed(0)
    t, cap = 3, 4
    keep = torch.ones(t, cap, dtype=torch.bool)
    lay = build_layout(keep)
    assert torch.equal(lay.dense_index, torch.arange(t * cap).view(t, cap))
    q, k, v = (torch.randn(t, HEADS, cap, HEAD_DIM) for _ in range(3))
    po = packed_attention(*(to_heads(pack(to_tokens(x), lay)) for x in (q, k, v)), lay)
    assert torch.equal(po, F.scaled_dot_product_attention(q, k, v))
