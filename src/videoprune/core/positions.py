"""Position bookkeeping for pruned sequences: kept tokens keep their unpruned position ids.

Works for 3-axis M-RoPE ids ``(3, B, L)`` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) and 1D ids ``(B, L)``.
The positions are *gathered* from the full sequence's ids, never re-derived, so kept video
tokens and all text keep exactly the ids they had without pruning (methods.md §1.3).
Decoding continues from the unpruned sequence's next position: for a pruned batch of length
L', ``rope_delta = max position + 1 - L'`` per row, and step ``s`` after the prompt gets id
``L' + s + rope_delta``.
"""

from __future__ import annotations

import torch

from .plan import KeepPlan

__all__ = ["PAD_POSITION", "prune_positions", "rope_deltas"]

# Position id written into padding slots; HF's Qwen-VL get_rope_index uses 1 there too.
PAD_POSITION = 1


def _check(position_ids: torch.Tensor, plan: KeepPlan) -> None:
    b, length = plan.keep.shape
    if position_ids.dim() == 2:
        ok = tuple(position_ids.shape) == (b, length)
    elif position_ids.dim() == 3:
        ok = position_ids.shape[1:] == (b, length)
    else:
        ok = False
    if not ok:
        raise ValueError(
            f"position_ids must have shape (B, L) or (A, B, L) with B={b}, L={length}; "
            f"got {tuple(position_ids.shape)}"
        )


def prune_positions(position_ids: torch.Tensor, plan: KeepPlan) -> torch.Tensor:
    """Position ids of the pruned batch: ``(A, B, L')`` or ``(B, L')``, pads set to :data:`PAD_POSITION`.

    Args:
        position_ids: the full (unpruned) sequence's ids, ``(A, B, L)`` for multi-axis RoPE
            (A = 3 for M-RoPE) or ``(B, L)`` for 1D.
        plan: the batch's :class:`KeepPlan`.
    """
    _check(position_ids, plan)
    pad = plan.attention_mask.to(position_ids.device) == 0
    if position_ids.dim() == 2:
        out = plan.gather(position_ids)
        return out.masked_fill(pad, PAD_POSITION)
    out = plan.gather(position_ids.transpose(0, 1), dim=2).transpose(0, 1)
    return out.masked_fill(pad.unsqueeze(0), PAD_POSITION)


def rope_deltas(pruned_position_ids: torch.Tensor, plan: KeepPlan) -> torch.Tensor:
    """``(B, 1)`` long: ``max position over the row's real tokens (all axes) + 1 - L'``.

    A row with no real token gets delta 0.
    """
    real = plan.attention_mask.to(pruned_position_ids.device).bool()
    pos = pruned_position_ids if pruned_position_ids.dim() == 3 else pruned_position_ids.unsqueeze(0)
    deltas = torch.zeros(real.shape[0], 1, dtype=torch.long, device=pos.device)
    has_real = real.any(dim=1)
    if plan.pruned_length and bool(has_real.any()):
        lowest = torch.iinfo(pos.dtype).min if not pos.is_floating_point() else float("-inf")
        row_max = pos.masked_fill(~real.unsqueeze(0), lowest).amax(dim=(0, 2))
        deltas[has_real, 0] = (row_max[has_real] + 1 - plan.pruned_length).long()
    return deltas
