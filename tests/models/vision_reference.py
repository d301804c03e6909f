"""Slow, obviously-correct reference for encoding a subset of merge units (Qwen2-VL / Qwen2.5-VL / Qwen3-VL).

Every temporal slice is encoded on its own: its kept patches in raster order, dense eager
attention with an explicit boolean mask (same slice; for Qwen2.5-VL's windowed blocks also the
same window, computed from the unit's (h, w) on the full grid), rotary ids from the patch's
(row, col) on the full grid, then the merger. Qwen3-VL: the learned position table is resized to
the slice's (h, w) grid with ``F.interpolate`` (bilinear, align_corners) and read at each kept
patch's (row, col); the deepstack mergers run on the slice's hidden states after their blocks.
No cu_seqlens, no permutations.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F


def _patch_rows_cols(h_units: int, w_units: int, merge: int):
    """(row, col) of every patch of one slice, in the encoder's (h/m, w/m, m, m) row order."""
    rows, cols = [], []
    for uh in range(h_units):
        for uw in range(w_units):
            for i in range(merge):
                for j in range(merge):
                    rows.append(uh * merge + i)
                    cols.append(uw * merge + j)
    return torch.tensor(rows), torch.tensor(cols)


def _attention(blk, x, allowed, cos, sin, key_bias=None):
    mod = importlib.import_module(type(blk).__module__)
    attn = blk.attn
    n = x.shape[0]
    q, k, v = attn.qkv(x).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = mod.apply_rotary_pos_emb_vision(q, k, cos, sin)
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # (heads, n, d)
    scores = q @ k.transpose(-1, -2) * attn.scaling
    if key_bias is not None:
        scores = scores + key_bias.view(1, 1, n)
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v  # (heads, n, d)
    return attn.proj(out.transpose(0, 1).reshape(n, -1))


def _position_table(visual, h: int, w: int) -> torch.Tensor:
    """Qwen3-VL: (h, w, C) learned position embeddings resized to an h x w patch grid."""
    side = visual.num_grid_per_side
    table = visual.pos_embed.weight.view(side, side, -1).permute(2, 0, 1).unsqueeze(0)
    return F.interpolate(table, size=(h, w), mode="bilinear", align_corners=True)[0].permute(1, 2, 0)


def reference_encode(visual, pixel_values, grid_thw, keep_units, key_bias_first=None):
    """(K, D) features of the kept units, raster order, each slice encoded alone.

    ``key_bias_first``: optional (K·unit,) additive key bias for block 0 (raster order).
    """
    return reference_encode_deepstack(visual, pixel_values, grid_thw, keep_units, key_bias_first)[0]


def reference_encode_deepstack(visual, pixel_values, grid_thw, keep_units, key_bias_first=None):
    """((K, D) features, [(K, D) per deepstack layer]) of the kept units, each slice encoded alone."""
    deep_at = list(getattr(visual, "deepstack_visual_indexes", None) or [])
    deep = [[] for _ in deep_at]
    merge = visual.spatial_merge_size
    unit = merge * merge
    windowed = hasattr(visual, "fullatt_block_indexes")
    full_blocks = set(visual.fullatt_block_indexes) if windowed else set(range(len(visual.blocks)))
    ws = visual.window_size // merge // visual.patch_size if windowed else None
    feats, start_unit, start_kept = [], 0, 0
    for t, h, w in [tuple(int(v) for v in g) for g in grid_thw]:
        hu, wu = h // merge, w // merge
        rows, cols = _patch_rows_cols(hu, wu, merge)
        for _ in range(t):
            k_units = keep_units[start_unit : start_unit + hu * wu]
            ids = torch.nonzero(k_units).flatten()
            start_unit += hu * wu
            if ids.numel() == 0:
                continue
            pr = (ids.unsqueeze(1) * unit + torch.arange(unit)).flatten()  # patch rows within the slice
            base = (start_unit - hu * wu) * unit
            x = visual.patch_embed(pixel_values[base + pr].type(visual.dtype))
            if hasattr(visual, "pos_embed"):
                x = x + _position_table(visual, h, w)[rows[pr], cols[pr]]
            pos = torch.stack([rows[pr], cols[pr]], dim=-1)
            cos, sin = visual.rotary_pos_emb(pos, pos)
            uh, uw = rows[pr] // merge, cols[pr] // merge
            same_slice = torch.ones(len(pr), len(pr), dtype=torch.bool)
            if windowed:
                win = (uh // ws) * 10_000 + (uw // ws)
                same_window = win.unsqueeze(0) == win.unsqueeze(1)
            bias = None
            if key_bias_first is not None:
                bias = key_bias_first[start_kept * unit : (start_kept + len(ids)) * unit]
            for bi, blk in enumerate(visual.blocks):
                allowed = same_slice if bi in full_blocks else same_window
                kb = bias if bi == 0 else None
                x = x + _attention(blk, blk.norm1(x), allowed, cos, sin, kb)
                x = x + blk.mlp(blk.norm2(x))
                if bi in deep_at:
                    deep[deep_at.index(bi)].append(visual.deepstack_merger_list[deep_at.index(bi)](x))
            feats.append(visual.merger(x))
            start_kept += len(ids)
    return torch.cat(feats), [torch.cat(d) for d in deep]
