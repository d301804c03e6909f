"""STTS inside vLLM's Qwen2.5-VL vision tower: score after block ``prune_at``, bias the next, prune the rest.

The order of :class:`videoprune.models.stts_qwen2_5_vl.Qwen2_5_VLSTTS.encode` (the HF integration),
on vLLM's modules: blocks ``0..prune_at`` on every unit; the scorer and the selection
(:func:`videoprune.stts.hf.score_and_select`, the same function) on their output; block
``prune_at + 1`` with the soft key bias; the later blocks and the merger on kept units only.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from ..stts.hf import score_and_select
from ..stts.scorer import grid_to_windows, windows_to_grid
from . import encoder as E

__all__ = ["encode_stts"]


def _selections(visual, scorer, cfg, hidden_raster: torch.Tensor, grid: list[list[int]]):
    """Per video, the STTS selection from the raster-order hidden states after block ``prune_at``."""
    m = visual.spatial_merge_size
    sizes = [t * h * w for t, h, w in grid]
    parts = hidden_raster.split(sizes)
    grids = [windows_to_grid(x, t, h, w, m) for x, (t, h, w) in zip(parts, grid)]
    state = SimpleNamespace(config=cfg, scorer=scorer, aux_loss=None, last_selection=())
    with torch.no_grad():
        sels = score_and_select(state, [g.float() for g in grids], m, training=False)
    return sels


def encode_stts(visual, scorer, cfg, pixels: torch.Tensor, grid: list[list[int]]):
    """From normalised ``pixels``: ``(features (K, D) of kept units, per-video keep masks, patch rows entering the pruned blocks)``."""
    m, unit, k = visual.spatial_merge_size, visual.spatial_merge_unit, cfg.prune_at
    full = E.kept_metadata(visual, grid, None)
    x = visual.patch_embed(pixels)
    x = E.to_window(x, full, unit).unsqueeze(1)
    x = E.run_blocks(visual, x, full, range(0, k + 1))
    raster = E.to_raster(x.squeeze(1), full, unit)
    sels = _selections(visual, scorer, cfg, raster, grid)
    if sels[0].bias is not None:
        bias = torch.cat([grid_to_windows(s.bias.unsqueeze(-1), m).squeeze(-1) for s in sels]).to(x.device)
        x = E.block_with_key_bias(visual, k + 1, x, full, E.to_window(bias, full, unit))
    else:
        x = E.run_blocks(visual, x, full, [k + 1])
    keeps = [s.keep_flat.to(x.device) for s in sels]
    keep = torch.cat(keeps)
    kept = E.kept_metadata(visual, grid, keep)
    h = E.to_raster(x.squeeze(1), full, unit).reshape(-1, unit, x.shape[-1])[keep].reshape(-1, x.shape[-1])
    h = E.to_window(h, kept, unit).unsqueeze(1)
    h = E.run_blocks(visual, h, kept, range(k + 2, len(visual.blocks)))
    feats = E.merge_to_raster(visual, h, kept)
    return feats, keeps, int(h.shape[0])
