"""Packing of the kept patches of all frames into rows after the STTS pruning block.

After block ``prune_at + 1`` the ViT keeps only the selected patches. Frames are attended
independently (per-frame ViT), and each has ``capacity = Hp * Wp`` patches before pruning, so
frames' kept patches are bin-packed into rows of that length by first-fit decreasing (FFD) and a
block-diagonal mask keeps every token inside its own frame (methods.md §2 item 8). Encoders
with a variable-length attention (flash-attn ``cu_seqlens``) can skip the rows and use
:attr:`PackedLayout.cu_seqlens` over the flat kept tokens instead.

Token order conventions: the *dense* tokens of a video are ``(T * P, C)`` in raster order
``(t, patch)`` with ``P = capacity``; the *flat kept* tokens are the dense ones where the keep
mask is True, in the same order; inside a row, frames appear in FFD placement order and each
frame's tokens in raster order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

__all__ = [
    "PackedLayout",
    "build_layout",
    "ffd_pack",
    "kept_cu_seqlens",
    "pack",
    "pack_kept",
    "packed_attention",
    "scatter_back",
    "unpack_kept",
]


def ffd_pack(sizes: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: ``rows[r]`` lists the item indices placed in row ``r``, in placement order.

    Items are taken largest first (equal sizes: lower index first) and each goes to the first
    row (in creation order) with room. Items of size 0 are placed nowhere. Uses at most
    ``11/9 * OPT + 6/9`` rows (Dósa 2007); optimal on many inputs, not all.
    """
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be a positive int, got {capacity!r}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or not (0 <= s <= capacity):
            raise ValueError(f"sizes must be ints in [0, capacity={capacity}], got {s!r}")
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        if sizes[i] == 0:
            continue
        for r, room in enumerate(free):
            if sizes[i] <= room:
                rows[r].append(i)
                free[r] -= sizes[i]
                break
        else:
            rows.append([i])
            free.append(capacity - sizes[i])
    return rows


def kept_cu_seqlens(kept_per_frame: torch.Tensor) -> torch.Tensor:
    """``(F + 1,)`` int32 cumulative lengths of the non-empty frames over the flat kept tokens."""
    lens = kept_per_frame[kept_per_frame > 0].to(torch.int32)
    return F.pad(torch.cumsum(lens, 0, dtype=torch.int32), (1, 0))


@dataclass(frozen=True)
class PackedLayout:
    """Where every kept patch of one video sits in the packed ``(R, L)`` rows.

    Attributes:
        capacity: row length ``L`` = patches per frame before pruning.
        keep: ``(T * P,)`` bool, the dense keep mask the layout was built from.
        rows: FFD result, frame indices per row in placement order.
        dense_index: ``(R, L)`` long index into the dense flat tokens; -1 at padding.
        kept_index: ``(R, L)`` long index into the flat kept tokens; -1 at padding and at
            refill slots (pruned tokens that are in a row for compute only).
        segment_ids: ``(R, L)`` long, the frame index of each slot; -1 at padding.
        is_output: ``(R, L)`` bool, True at the kept tokens (not padding, not refill).
        refilled: ``(T,)`` bool, frames whose row was refilled with their pruned tokens.
        cu_seqlens: ``(F + 1,)`` int32 over the flat kept tokens, one segment per non-empty
            frame (for varlen attention; independent of rows and refill).
        max_seqlen: the longest such segment.
    """

    capacity: int
    keep: torch.Tensor
    rows: tuple[tuple[int, ...], ...]
    dense_index: torch.Tensor
    kept_index: torch.Tensor
    segment_ids: torch.Tensor
    is_output: torch.Tensor
    refilled: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    @property
    def num_frames(self) -> int:
        return self.keep.shape[0] // self.capacity

    @property
    def num_kept(self) -> int:
        return int(self.keep.sum())

    @property
    def attn_mask(self) -> torch.Tensor:
        """``(R, 1, L, L)`` bool block-diagonal mask: query and key in the same frame segment.

        Padding slots share segment -1, so a padding query attends to the row's padding (never
        an empty row, so SDPA gives no NaN) and a real query never sees padding.
        """
        seg = self.segment_ids
        return (seg.unsqueeze(-1) == seg.unsqueeze(-2)).unsqueeze(1)


def build_layout(keep: torch.Tensor, refill: bool = False) -> PackedLayout:
    """Pack one video's kept patches into rows of its per-frame patch count.

    Args:
        keep: ``(T, P)`` or ``(T, Hp, Wp)`` bool patch keep mask (e.g.
            :attr:`STTSSelection.keep_patches`).
        refill: when True, a frame that ends up alone in its row (with pruned patches) is run
            whole: its row holds all its ``P`` patches in raster order, the pruned ones marked
            not-output. This costs no extra rows (the slots would be padding) and gives those
            kept tokens the context of the full frame; their outputs then equal a dense
            per-frame pass rather than a kept-only pass.
    """
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or keep.dim() not in (2, 3):
        raise ValueError(f"keep must be a (T, P) or (T, Hp, Wp) bool tensor, got {getattr(keep, 'dtype', type(keep))}")
    t = keep.shape[0]
    keep2 = keep.reshape(t, -1)
    cap = keep2.shape[1]
    device = keep.device
    counts = keep2.sum(1)
    rows = ffd_pack([int(c) for c in counts.tolist()], cap)
    n_rows = len(rows)
    flat = keep2.reshape(-1)
    rank = torch.cumsum(flat.long(), 0) - 1

    # Host-side FFD gives each frame a row and an offset; the token placement is then one
    # vectorised scatter (no per-frame device syncs).
    row_of = [-1] * t
    offset_of = [0] * t
    alone = [False] * t
    for r, frames in enumerate(rows):
        pos = 0
        for f in frames:
            row_of[f], offset_of[f], alone[f] = r, pos, len(frames) == 1
            pos += int(counts[f])
    refilled = torch.tensor(alone, dtype=torch.bool, device=device) & (counts < cap)
    if not refill:
        refilled = torch.zeros_like(refilled)
    placed = keep2 | refilled.unsqueeze(1)  # (T, P): tokens that get a slot
    slot = torch.cumsum(placed.long(), 1) - 1 + torch.tensor(offset_of, device=device).unsqueeze(1)
    row = torch.tensor(row_of, device=device).unsqueeze(1).expand(t, cap)
    dense = torch.arange(t * cap, device=device).view(t, cap)
    frame = torch.arange(t, device=device).unsqueeze(1).expand(t, cap)
    dense_index = torch.full((n_rows, cap), -1, dtype=torch.long, device=device)
    segment_ids = torch.full((n_rows, cap), -1, dtype=torch.long, device=device)
    dense_index[row[placed], slot[placed]] = dense[placed]
    segment_ids[row[placed], slot[placed]] = frame[placed]
    valid = dense_index >= 0
    safe = dense_index.clamp(min=0)
    is_output = valid & flat[safe]
    kept_index = torch.where(is_output, rank[safe], torch.full_like(safe, -1))
    cu = kept_cu_seqlens(counts).to(device)
    max_len = int((cu[1:] - cu[:-1]).max()) if cu.numel() > 1 else 0
    return PackedLayout(
        capacity=cap,
        keep=flat,
        rows=tuple(tuple(fr) for fr in rows),
        dense_index=dense_index,
        kept_index=kept_index,
        segment_ids=segment_ids,
        is_output=is_output,
        refilled=refilled,
        cu_seqlens=cu,
        max_seqlen=max_len,
    )


def _flat_dense(x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    n = layout.keep.shape[0]
    if x.shape[0] == n and x.dim() == 2:
        return x
    lead = x.shape[: x.dim() - 1].numel()
    if lead != n:
        raise ValueError(f"dense tokens {tuple(x.shape)} do not hold T*P = {n} tokens")
    return x.reshape(n, x.shape[-1])


def pack(x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """Dense tokens ``(T*P, C)`` / ``(T, P, C)`` / ``(T, Hp, Wp, C)`` -> packed rows ``(R, L, C)``; padding is 0."""
    xf = _flat_dense(x, layout)
    valid = (layout.dense_index >= 0).unsqueeze(-1)
    out = xf[layout.dense_index.clamp(min=0)]
    return torch.where(valid, out, torch.zeros((), dtype=out.dtype, device=out.device))


def pack_kept(kept: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """Flat kept tokens ``(N_kept, C)`` -> packed rows ``(R, L, C)``. Not for refilled layouts (the pruned tokens are gone)."""
    if bool(layout.refilled.any()):
        raise ValueError("layout has refilled frames: pack the dense tokens with pack() instead")
    if kept.dim() != 2 or kept.shape[0] != layout.num_kept:
        raise ValueError(f"kept must be ({layout.num_kept}, C), got {tuple(kept.shape)}")
    valid = (layout.kept_index >= 0).unsqueeze(-1)
    out = kept[layout.kept_index.clamp(min=0)]
    return torch.where(valid, out, torch.zeros((), dtype=out.dtype, device=out.device))


def unpack_kept(packed: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """Packed rows ``(R, L, C)`` -> flat kept tokens ``(N_kept, C)`` in raster order (refill and padding dropped)."""
    m = layout.is_output
    vals = packed[m]
    idx = layout.kept_index[m]
    out = packed.new_zeros((layout.num_kept, packed.shape[-1]))
    return out.index_copy(0, idx, vals)


def scatter_back(
    packed_out: torch.Tensor, layout: PackedLayout, dense_shape: tuple[int, ...], fill: float = 0.0
) -> torch.Tensor:
    """Packed rows ``(R, L, C)`` -> dense ``dense_shape`` (``(T, P, C)``, ``(T, Hp, Wp, C)`` ...).

    Kept positions get their packed output; pruned positions (including refill slots) get
    ``fill``. Differentiable w.r.t. ``packed_out``.
    """
    n = layout.keep.shape[0]
    c = packed_out.shape[-1]
    if torch.Size(dense_shape).numel() != n * c:
        raise ValueError(f"dense_shape {tuple(dense_shape)} does not hold T*P = {n} tokens of width {c}")
    m = layout.is_output
    base = packed_out.new_full((n, c), fill)
    return base.index_copy(0, layout.dense_index[m], packed_out[m]).reshape(dense_shape)


def packed_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: PackedLayout, scale: float | None = None
) -> torch.Tensor:
    """Block-diagonal SDPA over packed rows: ``(R, heads, L, d)`` each -> ``(R, heads, L, d)``.

    A token attends only to tokens of its own frame segment in its row (refill tokens of that
    frame included). Outputs at padding slots are finite but meaningless.
    """
    mask = layout.attn_mask.to(q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
