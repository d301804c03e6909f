"""Run vLLM's Qwen2.5-VL or Qwen2-VL vision tower on a kept subset of merge units (vLLM 0.32).

The vLLM counterpart of :mod:`videoprune.models.qwen_vision`, with the same semantics, so that a
plug-in-served model and an HF model patched by :func:`videoprune.patch` compute the same
features: one *merge unit* is ``spatial_merge_size**2`` consecutive patch rows (one LLM token);

* full-attention blocks attend within each temporal slice's kept units (a slice with nothing
  kept is skipped); every block of Qwen2-VL's tower (``Qwen2VisionTransformer``) is one;
* Qwen2.5-VL's windowed blocks partition only kept units: the windows are vLLM's own
  (``Qwen2_5_VisionTransformer.get_rope_by_thw``) on the full grid, restricted to kept units;
* kept patches keep their rotary rows (the full table is computed, then gathered).

Only vLLM's own modules run (``patch_embed``, ``blocks``, ``merger``, its attention backend); what
changes is the metadata the tower's ``forward`` takes (``encoder_metadata``), built here for the
kept units by :func:`kept_metadata`. Qwen2-VL's metadata has no window permutation
(``window_index``), so :func:`to_window` / :func:`to_raster` leave its rows as they are. STTS's
block with the soft key bias (:func:`block_with_key_bias`, Qwen2.5-VL only) is the one place that
computes attention itself, because vLLM's encoder attention takes no bias.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["block_with_key_bias", "encode_kept", "kept_metadata", "merge_to_raster", "merge_unit", "normalized_pixels",
           "run_blocks", "to_raster", "to_window"]


def merge_unit(visual) -> int:
    """Patch rows per merge unit (one LLM token): ``spatial_merge_size**2`` (Qwen2-VL's tower has no attribute for it)."""
    return int(visual.spatial_merge_size) ** 2


def _windowed(visual) -> bool:
    """Qwen2.5-VL's tower (windowed and full-attention blocks); Qwen2-VL's attends per temporal slice in every block."""
    return hasattr(visual, "fullatt_block_indexes")


def _window_segments(visual, grid: Sequence[Sequence[int]], keep_w: torch.Tensor) -> torch.Tensor:
    """Patch-row boundaries of the windows' kept units, in window order (empty windows dropped)."""
    unit = merge_unit(visual)
    parts, start, offset = [torch.zeros(1, dtype=torch.long)], 0, 0
    for t, h, w in grid:
        _, _, _, cu_win, _ = visual.get_rope_by_thw(int(t), int(h), int(w))
        n = int(t) * int(h) * int(w) // unit
        window_of = torch.bucketize(torch.arange(n) * unit, cu_win.long().cpu(), right=True)
        counts = torch.bincount(window_of[keep_w[start:start + n].cpu()], minlength=len(cu_win))
        parts.append(counts.cumsum(0) * unit + offset)
        offset += int(counts.sum()) * unit
        start += n
    return torch.unique_consecutive(torch.cat(parts)).to(torch.int32)


def _frame_segments(visual, grid: Sequence[Sequence[int]], keep_units: torch.Tensor) -> torch.Tensor:
    """Patch-row boundaries of each temporal slice's kept units (empty slices dropped)."""
    unit = merge_unit(visual)
    per_frame = torch.cat([torch.full((int(t),), int(h) * int(w) // unit) for t, h, w in grid])
    frame_of_unit = torch.repeat_interleave(torch.arange(per_frame.shape[0]), per_frame)
    kept = torch.bincount(frame_of_unit[keep_units.cpu()], minlength=per_frame.shape[0])
    return torch.unique_consecutive(F.pad(kept.cumsum(0) * unit, (1, 0))).to(torch.int32)


def kept_metadata(visual, grid_thw: Sequence[Sequence[int]], keep_units: torch.Tensor | None) -> dict:
    """``encoder_metadata`` for ``visual.forward`` when only ``keep_units`` (bool, raster units) are encoded.

    With ``keep_units=None`` it is vLLM's own metadata for the full grid. Otherwise the rotary
    rows are the kept patches' rows and every segmentation covers kept units only; for Qwen2.5-VL
    ``window_index`` / ``reverse_indices`` index the K kept units (raster order of kept units).
    """
    full = visual.prepare_encoder_metadata(grid_thw)
    if keep_units is None:
        return full
    if not _windowed(visual):
        return _frame_kept_metadata(visual, grid_thw, keep_units, full)
    from vllm.model_executor.layers.attention.mm_encoder_attention import MMEncoderAttention

    keep_units = keep_units.to(full["window_index"].device)
    unit, device = merge_unit(visual), visual.device
    wi = full["window_index"]
    keep_w = keep_units[wi]
    rank = torch.cumsum(keep_units.long(), 0) - 1
    window_index = rank[wi[keep_w]]
    meta = dict(full)
    meta["window_index"] = window_index
    meta["reverse_indices"] = torch.argsort(window_index)
    meta.update(_kept_rotary(full, keep_w, unit))
    # keep_w in raster-video blocks: window order never crosses videos, so slicing per video is exact
    for name, cu in (("full", _frame_segments(visual, grid_thw, keep_units)),
                     ("window", _window_segments(visual, grid_thw, keep_w))):
        cu_np = cu.numpy()
        key = "cu_seqlens" if name == "full" else "cu_window_seqlens"
        meta[key] = MMEncoderAttention.maybe_recompute_cu_seqlens(
            visual.attn_backend, cu_np, visual.hidden_size, visual.tp_size, device,
            fp8_padded_hidden_size=visual.fp8_padded_hidden_size)
        meta[f"max_seqlen_{name}"] = torch.tensor(
            MMEncoderAttention.compute_max_seqlen(visual.attn_backend, cu_np), dtype=torch.int32)
        meta[f"sequence_lengths_{name}"] = MMEncoderAttention.maybe_compute_seq_lens(
            visual.attn_backend, cu_np, device)
    return meta


def _kept_rotary(full: dict, keep: torch.Tensor, unit: int) -> dict:
    """The rotary cos/sin rows of the kept units' patches (``keep`` over units, in the rows' unit order)."""
    out = {}
    for key in ("rotary_pos_emb_cos", "rotary_pos_emb_sin"):
        rows = full[key]
        out[key] = rows.reshape(-1, unit, rows.shape[-1])[keep.to(rows.device)].reshape(-1, rows.shape[-1])
    return out


def _frame_kept_metadata(visual, grid_thw: Sequence[Sequence[int]], keep_units: torch.Tensor, full: dict) -> dict:
    """Qwen2-VL's ``encoder_metadata`` for the kept units: rotary rows gathered, one segment per slice's kept units.

    Built as ``Qwen2VisionTransformer.prepare_encoder_metadata`` (vLLM 0.32) builds the full one:
    ``cu_seqlens`` on the tower's device, ``max_seqlen`` from the tower's own rule for its backend.
    """
    meta = dict(full)
    meta.update(_kept_rotary(full, keep_units, merge_unit(visual)))
    cu = _frame_segments(visual, grid_thw, keep_units).to(full["cu_seqlens"].device)
    meta["cu_seqlens"] = cu
    meta["max_seqlen"] = visual.compute_attn_mask_seqlen(cu)
    return meta


def normalized_pixels(visual, pixel_values: torch.Tensor) -> torch.Tensor:
    """The pixels the tower's patch embedding sees: vLLM may ship raw uint8 and normalise on the device."""
    return visual.input_norm(pixel_values.to(device=visual.device), visual.dtype)


def encode_kept(visual, pixels: torch.Tensor, grid_thw: Sequence[Sequence[int]], keep_units: torch.Tensor) -> torch.Tensor:
    """``(K, D)`` features of the kept units (raster order), encoding only their patch rows (pre-encoder EVS).

    ``pixels`` are normalised (:func:`normalized_pixels`), all patch rows; the steps of
    the tower's ``forward`` (Qwen2.5-VL or Qwen2-VL) after its input norm run on the kept rows only.
    """
    unit = merge_unit(visual)
    meta = kept_metadata(visual, grid_thw, keep_units)
    rows = pixels.reshape(-1, unit, pixels.shape[-1])[keep_units.to(pixels.device)].reshape(-1, pixels.shape[-1])
    hidden = to_window(visual.patch_embed(rows), meta, unit).unsqueeze(1)
    hidden = run_blocks(visual, hidden, meta, range(len(visual.blocks)))
    return merge_to_raster(visual, hidden, meta)


def merge_to_raster(visual, hidden: torch.Tensor, meta: dict) -> torch.Tensor:
    """The merger on window-order hidden states ``(S, 1, C)``: ``(S / unit, D)`` features in raster unit order.

    float16 hidden states are clamped first, as the tower's ``forward`` does (vLLM 0.32): the last
    blocks can overflow float16 on long videos.
    """
    if hidden.dtype == torch.float16:
        from vllm.model_executor.models.utils import cast_overflow_tensors

        hidden = cast_overflow_tensors(hidden)
    feats = visual.merger(hidden)
    return feats[meta["reverse_indices"]] if "reverse_indices" in meta else feats


def to_window(x: torch.Tensor, meta: dict, unit: int) -> torch.Tensor:
    """Raster-order patch rows ``(S, ...)`` to the tower's window order (Qwen2-VL: unchanged)."""
    if "window_index" not in meta:
        return x
    return x.reshape(-1, unit, *x.shape[1:])[meta["window_index"]].reshape(x.shape)


def to_raster(x: torch.Tensor, meta: dict, unit: int) -> torch.Tensor:
    """Window-order patch rows ``(S, ...)`` back to raster order (Qwen2-VL: unchanged)."""
    if "reverse_indices" not in meta:
        return x
    return x.reshape(-1, unit, *x.shape[1:])[meta["reverse_indices"]].reshape(x.shape)


def _segments(visual, meta: dict, layer: int):
    if not _windowed(visual):
        return meta["cu_seqlens"], meta["max_seqlen"], None
    name = "full" if layer in visual.fullatt_block_indexes else "window"
    cu = meta["cu_seqlens"] if name == "full" else meta["cu_window_seqlens"]
    return cu, meta[f"max_seqlen_{name}"], meta.get(f"sequence_lengths_{name}")


def run_blocks(visual, hidden: torch.Tensor, meta: dict, blocks: Iterable[int]) -> torch.Tensor:
    """Run ``visual.blocks[i]`` for ``i`` in ``blocks`` on window-order hidden states ``(S, 1, C)``.

    The loop of ``Qwen2_5_VisionTransformer.forward`` / ``Qwen2VisionTransformer.forward`` (vLLM
    0.32), over a range of blocks; Qwen2-VL's blocks take no ``sequence_lengths``.
    """
    for i in blocks:
        cu, max_seqlen, lengths = _segments(visual, meta, i)
        extra = {"sequence_lengths": lengths} if _windowed(visual) else {}
        hidden = visual.blocks[i](hidden, cu_seqlens=cu, rotary_pos_emb_cos=meta["rotary_pos_emb_cos"],
                                  rotary_pos_emb_sin=meta["rotary_pos_emb_sin"], max_seqlen=max_seqlen, **extra)
    return hidden


def block_with_key_bias(visual, layer: int, hidden: torch.Tensor, meta: dict, key_bias: torch.Tensor) -> torch.Tensor:
    """Block ``layer`` with an additive per-key attention bias (STTS), window-order ``(S, 1, C)`` in and out.

    Same computation as ``Qwen2_5_VisionBlock.forward`` (vLLM 0.32: qkv, rotary, attention within
    segments, proj, fused residual norm, MLP); attention is
    :func:`videoprune.models.vision_attention.segment_attention` with ``key_bias`` (window order,
    one value per patch row), the function the HF integration uses for this block.
    """
    from ..models.vision_attention import segment_attention

    blk = visual.blocks[layer]
    attn = blk.attn
    heads, head_dim = attn.num_attention_heads_per_partition, attn.hidden_size_per_attention_head
    qkv, _ = attn.qkv(blk.norm1(hidden))
    s = qkv.shape[0]
    q, k, v = qkv.reshape(s, 3, heads, head_dim).unbind(1)
    qk = attn.apply_rotary_emb(torch.stack([q, k]).contiguous(), meta["rotary_pos_emb_cos"],
                               meta["rotary_pos_emb_sin"])
    q, k = qk.unbind(0)
    cu, _, _ = _segments(visual, meta, layer)
    out = segment_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), cu.long(),
                            scale=head_dim ** -0.5, key_bias=key_bias.to(q.dtype))
    out, _ = attn.proj(out.transpose(0, 1).reshape(s, 1, heads * head_dim).contiguous())
    normed, residual = blk.norm2(hidden, residual=out)
    return residual + blk.mlp(normed)
