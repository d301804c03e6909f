"""Run the Qwen2-VL / Qwen2.5-VL / Qwen3-VL vision encoder on a kept subset of merge units (transformers 5.23.0).

One *merge unit* is ``spatial_merge_size**2`` consecutive patch rows of ``pixel_values`` (one
LLM token). Pre-encoder EVS keeps a subset of units before block 0; STTS keeps a subset after
block ``k``. Both use the pieces here, which drive the model's own modules (``patch_embed``,
``pos_embed``, ``rotary_pos_emb``, ``blocks``, ``merger``, ``deepstack_merger_list``) with our
own segment boundaries:

* attention is per temporal slice (the encoder's own ``cu_seqlens`` convention): a kept unit
  attends to the kept units of its own slice only; a slice with nothing kept is skipped. The
  blocks use the tower's attention implementation: with SDPA transformers calls attention once
  per segment; after :func:`videoprune.models.vision_attention.enable_fast_vision_attention`
  each block makes one call. The STTS key-bias block always runs one SDPA call per distinct
  segment length;
* Qwen2.5-VL's windowed blocks partition ONLY kept units: windows are computed on the full
  grid by the model's own ``get_vision_window_index`` and then restricted to kept units;
  full-attention blocks attend within each slice's kept units;
* rotary position ids of kept patches are unchanged (the full table is computed, then gathered);
* Qwen3-VL's learned position embeddings, bilinearly interpolated to each grid, are gathered
  the same way: the interpolation taps and weights are computed on the full grid by the model's
  own ``get_vision_interpolation_indices_and_weights`` and only the kept patches' rows are used;
* the merger runs on kept units only and returns one feature per kept token, in raster order;
  so do Qwen3-VL's deepstack mergers (:func:`encode_kept_units_deepstack`), applied to the kept
  units' hidden states after the blocks of ``visual.deepstack_visual_indexes``.

Public hidden states (what :func:`run_blocks` takes and returns) are always the kept patches in
**raster order** ``(video, t, h/m, w/m, m, m)``: rows ``[u*m², (u+1)*m²)`` are kept unit ``u`` of
``layout.units``. The window permutation of Qwen2.5-VL is internal.

Typical uses::

    feats = encode_kept_units(model.model.visual, pixels, grid_thw, keep_units)      # pre-encoder
    feats, deep = encode_kept_units_deepstack(visual, pixels, grid_thw, keep_units)   # Qwen3-VL

    full = unit_layout(visual, grid_thw)                                              # STTS
    h = run_blocks(visual, embed_patches(visual, pixels, full), full, blocks=range(0, k + 1))
    h = run_blocks(visual, h, full, blocks=range(k + 1, k + 2), key_bias=bias)        # soft bias
    kept = unit_layout(visual, grid_thw, keep_units)
    h = run_blocks(visual, select_units(h, kept), kept, blocks=range(k + 2, depth))
    feats = merge_units(visual, h, kept)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .family import vision_tower_families

__all__ = [
    "UnitLayout",
    "unit_layout",
    "embed_patches",
    "select_units",
    "run_blocks",
    "merge_units",
    "encode_kept_units",
    "encode_kept_units_deepstack",
    "is_supported_visual",
]


def is_supported_visual(visual: torch.nn.Module) -> bool:
    """True for the Qwen2-VL, Qwen2.5-VL and Qwen3-VL(-MoE) vision towers (the encoders this module drives).

    The tower class names come from the family records (``Family.vision_tower``).
    """
    return type(visual).__name__ in vision_tower_families()


def _check_visual(visual) -> None:
    if not is_supported_visual(visual):
        raise ValueError(f"visual must be a Qwen2-VL, Qwen2.5-VL or Qwen3-VL vision tower (model.model.visual), "
                         f"got {type(visual).__name__}; other encoders are not supported by qwen_vision")


def _deepstack_layers(visual) -> list[int]:
    """Blocks whose output Qwen3-VL taps for deepstack features ([] for Qwen2-VL / Qwen2.5-VL)."""
    return [int(i) for i in getattr(visual, "deepstack_visual_indexes", None) or []]


def _windowed(visual) -> bool:
    return hasattr(visual, "fullatt_block_indexes")


@dataclass(frozen=True)
class UnitLayout:
    """Where the kept merge units of one encoder call sit, and how they attend.

    Attributes:
        grid_thw: ``(V, 3)`` long, pre-merge grids of the encoded videos/images.
        unit: ``spatial_merge_size**2``, patch rows per merge unit.
        keep_units: ``(N_units,)`` bool over all units, raster order.
        units: ``(K,)`` long, kept unit ids in raster order.
        patches: ``(K * unit,)`` long, the kept patch rows of ``pixel_values`` (raster order).
        order: ``(K,)`` long or None: kept-local unit indices in compute order (Qwen2.5-VL window
            order); None means compute order is raster order.
        inverse: ``(K,)`` long or None, the inverse permutation of ``order``.
        cu_seqlens: int32 segment boundaries (in patch rows, compute order) of full attention:
            one segment per temporal slice with at least one kept unit.
        max_seqlen: what flash attention needs (None for other implementations).
        cu_window_seqlens, max_window_seqlen: the same for windowed blocks (Qwen2.5-VL only).
        position_embeddings: ``(cos, sin)`` rows of the kept patches, in compute order.
    """

    grid_thw: torch.Tensor
    unit: int
    keep_units: torch.Tensor
    units: torch.Tensor
    patches: torch.Tensor
    order: torch.Tensor | None
    inverse: torch.Tensor | None
    cu_seqlens: torch.Tensor
    max_seqlen: int | None
    cu_window_seqlens: torch.Tensor | None
    max_window_seqlen: int | None
    position_embeddings: tuple[torch.Tensor, torch.Tensor]

    @property
    def num_units(self) -> int:
        return int(self.units.shape[0])

    @property
    def num_patches(self) -> int:
        return int(self.patches.shape[0])


def _grid_tensor(grid_thw, device) -> torch.Tensor:
    g = torch.as_tensor(grid_thw, dtype=torch.long)
    if g.dim() == 1:
        g = g.unsqueeze(0)
    if g.dim() != 2 or g.shape[1] != 3:
        raise ValueError(f"grid_thw must have shape (V, 3), got {tuple(g.shape)}")
    return g.to(device)


def unit_layout(visual: torch.nn.Module, grid_thw, keep_units: torch.Tensor | None = None) -> UnitLayout:
    """Build the :class:`UnitLayout` for ``grid_thw`` with ``keep_units`` (None = all kept).

    ``keep_units`` is ``(N_units,)`` bool, N_units = sum(T·H·W) / merge², raster order over the
    concatenated videos. Works on ``keep_units``' device; the only host syncs are on grid
    metadata and the kept count (needed for shapes).
    """
    _check_visual(visual)
    from transformers.utils.generic import get_max_seqlen
    from transformers.vision_utils import get_vision_position_ids

    merge = int(visual.spatial_merge_size)
    unit = merge * merge
    device = keep_units.device if keep_units is not None else next(visual.parameters()).device
    grid = _grid_tensor(grid_thw, device)
    if bool((grid <= 0).any()) or bool((grid[:, 1:] % merge != 0).any()):
        raise ValueError(f"grid_thw rows must be positive with H, W multiples of {merge}, got {grid.tolist()}")
    units_per_frame = grid[:, 1] * grid[:, 2] // unit  # (V,)
    n_units = int((grid[:, 0] * units_per_frame).sum())
    if keep_units is None:
        keep_units = torch.ones(n_units, dtype=torch.bool, device=device)
    if not isinstance(keep_units, torch.Tensor) or keep_units.dtype != torch.bool or keep_units.dim() != 1:
        raise ValueError("keep_units must be a 1-D bool tensor")
    if keep_units.shape[0] != n_units:
        raise ValueError(f"keep_units has {keep_units.shape[0]} entries but grid_thw implies {n_units} merge units")

    units = torch.nonzero(keep_units).flatten()
    patches = (units.unsqueeze(1) * unit + torch.arange(unit, device=device)).flatten()

    # one attention segment per temporal slice; empty slices dropped
    frame_units = torch.repeat_interleave(units_per_frame, grid[:, 0])  # (n_frames,)
    frame_of_unit = torch.repeat_interleave(torch.arange(frame_units.shape[0], device=device), frame_units)
    per_frame = torch.bincount(frame_of_unit[keep_units], minlength=frame_units.shape[0])
    cu = F.pad((per_frame * unit).cumsum(0, dtype=torch.int32), (1, 0))
    cu = torch.unique_consecutive(cu)
    max_seqlen = get_max_seqlen(cu, visual.config)

    # full rotary table, gathered: kept patches keep their exact rotary ids and values
    pos_ids = get_vision_position_ids(grid, merge)
    cos, sin = visual.rotary_pos_emb(pos_ids, pos_ids)  # first arg only gives the device
    cos, sin = cos[patches], sin[patches]

    order = inverse = cu_win = max_win = None
    if _windowed(visual):
        from transformers.vision_utils import get_vision_window_index

        window_index, cu_full = get_vision_window_index(grid, merge, int(visual.window_size),
                                                        int(visual.patch_size))
        window_index, cu_full = window_index.to(device), cu_full.to(device)
        # window of each position of the full window order, then restrict to kept units
        pos = torch.arange(n_units, device=device) * unit
        win_of_pos = torch.bucketize(pos, cu_full[1:].long(), right=True)
        kept_w = keep_units[window_index]
        rank = torch.cumsum(keep_units.long(), 0) - 1  # raster unit id -> kept-local index
        order = rank[window_index[kept_w]]
        inverse = torch.argsort(order)
        counts = torch.bincount(win_of_pos[kept_w], minlength=int(cu_full.shape[0]) - 1)
        cu_win = torch.unique_consecutive(F.pad((counts * unit).cumsum(0, dtype=torch.int32), (1, 0)))
        max_win = get_max_seqlen(cu_win, visual.config)
        cos, sin = _to_compute(cos, order, unit), _to_compute(sin, order, unit)
    return UnitLayout(grid_thw=grid, unit=unit, keep_units=keep_units, units=units, patches=patches,
                      order=order, inverse=inverse, cu_seqlens=cu, max_seqlen=max_seqlen,
                      cu_window_seqlens=cu_win, max_window_seqlen=max_win, position_embeddings=(cos, sin))


def _to_compute(x: torch.Tensor, order: torch.Tensor | None, unit: int) -> torch.Tensor:
    if order is None:
        return x
    return x.reshape(-1, unit, *x.shape[1:])[order].reshape(x.shape)


def _to_raster(x: torch.Tensor, layout: UnitLayout) -> torch.Tensor:
    if layout.inverse is None:
        return x
    return x.reshape(-1, layout.unit, *x.shape[1:])[layout.inverse].reshape(x.shape)


def embed_patches(visual: torch.nn.Module, pixel_values: torch.Tensor, layout: UnitLayout) -> torch.Tensor:
    """Patch-embed the kept patches: ``(K·unit, C)`` hidden states in raster order.

    ``pixel_values`` holds either all patch rows (``(N_units·unit, P)``; the kept rows are
    gathered) or only the kept ones (``(K·unit, P)``). Qwen3-VL: the learned position
    embeddings of the kept patches are added, as the model adds them for all patches.
    """
    _check_visual(visual)
    n_all = layout.keep_units.shape[0] * layout.unit
    if pixel_values.shape[0] == n_all:
        if layout.num_patches != n_all:
            pixel_values = pixel_values[layout.patches.to(pixel_values.device)]
    elif pixel_values.shape[0] != layout.num_patches:
        raise ValueError(f"pixel_values has {pixel_values.shape[0]} rows; expected {n_all} (all patches) or "
                         f"{layout.num_patches} (kept patches)")
    hidden = visual.patch_embed(pixel_values.type(visual.dtype))
    if hasattr(visual, "pos_embed"):  # Qwen3-VL
        hidden = hidden + _learned_position_embeddings(visual, layout).to(hidden.dtype)
    return hidden


def _learned_position_embeddings(visual, layout: UnitLayout) -> torch.Tensor:
    """Qwen3-VL: ``(K·unit, C)`` interpolated learned position embeddings of the kept patches.

    Same taps, weights and weighted sum as ``Qwen3VLVisionModel.forward`` (5.23.0 / 5.25.0); the
    taps are computed on the full grid and restricted to the kept rows, so each kept patch gets
    exactly the embedding it has in the full encoder.
    """
    from transformers.vision_utils import get_vision_interpolation_indices_and_weights

    idx, w = get_vision_interpolation_indices_and_weights(
        layout.grid_thw, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
        align_corners=visual.interpolation_align_corners, spatial_merge_size=visual.config.spatial_merge_size)
    if layout.num_patches != idx.shape[0]:
        idx, w = idx[layout.patches.to(idx.device)], w[layout.patches.to(w.device)]
    return (visual.pos_embed(idx) * w[:, :, None]).sum(1)


def select_units(hidden: torch.Tensor, layout: UnitLayout) -> torch.Tensor:
    """Keep the rows of ``layout``'s kept units from ALL-unit hidden states ``(N_units·unit, C)`` (raster)."""
    n_all = layout.keep_units.shape[0] * layout.unit
    if hidden.shape[0] != n_all:
        raise ValueError(f"hidden has {hidden.shape[0]} rows but the grid has {n_all} patches")
    return hidden[layout.patches.to(hidden.device)]


def _blocks(visual, blocks) -> list[int]:
    depth = len(visual.blocks)
    idx = list(range(depth)) if blocks is None else [int(b) for b in blocks]
    if any(not 0 <= b < depth for b in idx):
        raise ValueError(f"blocks must lie in [0, {depth}), got {idx}")
    return idx


def _run_compute(visual, x: torch.Tensor, layout: UnitLayout, blocks: list[int], key_bias) -> torch.Tensor:
    full = set(getattr(visual, "fullatt_block_indexes", range(len(visual.blocks))))
    for i in blocks:
        if i in full:
            cu, mx = layout.cu_seqlens, layout.max_seqlen
        else:
            cu, mx = layout.cu_window_seqlens, layout.max_window_seqlen
        blk = visual.blocks[i]
        if key_bias is None:
            x = blk(x, cu_seqlens=cu, max_seqlen=mx, position_embeddings=layout.position_embeddings)
        else:
            x = _block_with_key_bias(visual, blk, x, cu, layout.position_embeddings, key_bias)
    return x


def run_blocks(visual: torch.nn.Module, hidden: torch.Tensor, layout: UnitLayout,
               blocks: Iterable[int] | None = None, key_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Run encoder ``blocks`` (default: all, in order) on the kept patches of ``layout``.

    Args:
        hidden: ``(K·unit, C)`` kept-patch hidden states, raster order (from :func:`embed_patches`,
            :func:`select_units` or a previous call).
        blocks: block indices, run in the order given.
        key_bias: optional ``(K·unit,)`` float, raster order: added to the attention logits of
            every query against that key, in every block run by this call (STTS's soft bias;
            differentiable). Leave None for the model's own attention path.

    Returns:
        ``(K·unit, C)`` hidden states after the blocks, raster order.
    """
    _check_visual(visual)
    if hidden.dim() != 2 or hidden.shape[0] != layout.num_patches:
        raise ValueError(f"hidden must be ({layout.num_patches}, C) for this layout, got {tuple(hidden.shape)}")
    if key_bias is not None:
        if key_bias.shape != (layout.num_patches,):
            raise ValueError(f"key_bias must have shape ({layout.num_patches},), got {tuple(key_bias.shape)}")
        key_bias = _to_compute(key_bias, layout.order, layout.unit)
    x = _to_compute(hidden, layout.order, layout.unit)
    x = _run_compute(visual, x, layout, _blocks(visual, blocks), key_bias)
    return _to_raster(x, layout)


def merge_units(visual: torch.nn.Module, hidden: torch.Tensor, layout: UnitLayout) -> torch.Tensor:
    """The merger on kept units: ``(K, D)`` LLM-side features of the kept tokens, raster order."""
    _check_visual(visual)
    return visual.merger(hidden)


def encode_kept_units(visual: torch.nn.Module, pixel_values: torch.Tensor | None, grid_thw,
                      keep_units: torch.Tensor | None = None, *, start_block: int = 0,
                      hidden: torch.Tensor | None = None, key_bias: torch.Tensor | None = None,
                      layout: UnitLayout | None = None) -> torch.Tensor:
    """Encode only the kept merge units: ``(K, D)`` features, one per kept LLM token, raster order.

    Args:
        visual: ``model.model.visual`` of a Qwen2-VL / Qwen2.5-VL / Qwen3-VL model.
        pixel_values: ``(N_units·unit, P)`` patchified pixels (all units) or only the kept rows;
            ignored when ``hidden`` is given.
        grid_thw: ``(V, 3)`` pre-merge grids; several videos are encoded in one batched call.
        keep_units: ``(N_units,)`` bool, raster order; None keeps every unit.
        start_block, hidden: resume at ``start_block`` from hidden states after block
            ``start_block - 1``, given for all patches or for the kept ones (raster order).
        key_bias: optional ``(K·unit,)`` additive key bias for the FIRST block run (STTS).
        layout: a precomputed :func:`unit_layout` (must match grid_thw / keep_units).

    Guarantees: with every unit kept and ``start_block=0`` the result equals
    ``visual(pixel_values, grid_thw).pooler_output`` exactly (same kernels on the same rows in
    the same order). Otherwise each kept unit's feature equals running the blocks on the kept
    units of its temporal slice alone (Qwen2.5-VL: within its window's kept units). Qwen3-VL's
    deepstack features are not computed here: use :func:`encode_kept_units_deepstack`.
    """
    return _encode(visual, pixel_values, grid_thw, keep_units, start_block, hidden, key_bias, layout, taps=False)[0]


def encode_kept_units_deepstack(visual: torch.nn.Module, pixel_values: torch.Tensor, grid_thw,
                                keep_units: torch.Tensor | None = None, *,
                                layout: UnitLayout | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Qwen3-VL: encode only the kept merge units, with the deepstack features of those units.

    Returns ``(features (K, D), deepstack)``: ``deepstack[j]`` is ``(K, D)``, the output of
    ``visual.deepstack_merger_list[j]`` on the kept units' hidden states after block
    ``visual.deepstack_visual_indexes[j]``, raster order ([] for towers without deepstack).
    Arguments and guarantees as :func:`encode_kept_units` (from pixels, block 0): with every
    unit kept, ``features`` and ``deepstack`` equal ``visual(pixel_values, grid_thw)``'s
    ``pooler_output`` and ``deepstack_features`` exactly.
    """
    return _encode(visual, pixel_values, grid_thw, keep_units, 0, None, None, layout, taps=True)


def _encode(visual, pixel_values, grid_thw, keep_units, start_block, hidden, key_bias, layout, taps: bool):
    _check_visual(visual)
    layout = unit_layout(visual, grid_thw, keep_units) if layout is None else layout
    depth = len(visual.blocks)
    if not 0 <= start_block <= depth:
        raise ValueError(f"start_block must be in [0, {depth}], got {start_block}")
    if hidden is None:
        if start_block != 0:
            raise ValueError("start_block > 0 needs the hidden states after block start_block - 1")
        if pixel_values is None:
            raise ValueError("pixel_values is required when hidden is not given")
        x = embed_patches(visual, pixel_values, layout)
    else:
        x = hidden if hidden.shape[0] == layout.num_patches else select_units(hidden, layout)
    x = _to_compute(x, layout.order, layout.unit)
    blocks = list(range(start_block, depth))
    if key_bias is not None and blocks:
        if key_bias.shape != (layout.num_patches,):
            raise ValueError(f"key_bias must have shape ({layout.num_patches},), got {tuple(key_bias.shape)}")
        x = _run_compute(visual, x, layout, blocks[:1], _to_compute(key_bias, layout.order, layout.unit))
        blocks = blocks[1:]
    deep_at = _deepstack_layers(visual) if taps else []
    deepstack = []
    if deep_at:  # block by block, tapping after each deepstack block (the order of Qwen3VLVisionModel.forward)
        for i in blocks:
            x = _run_compute(visual, x, layout, [i], None)
            if i in deep_at:
                deepstack.append(_unit_order(visual.deepstack_merger_list[deep_at.index(i)](x), layout))
    else:
        x = _run_compute(visual, x, layout, blocks, None)
    # merger in compute order, then back to raster: the same order of operations as HF 5.23.0
    return _unit_order(visual.merger(x), layout), deepstack


def _unit_order(out: torch.Tensor, layout: UnitLayout) -> torch.Tensor:
    """One row per kept unit, from compute order to raster order."""
    return out if layout.inverse is None else out[layout.inverse]


def _block_with_key_bias(visual, blk, x, cu_seqlens, position_embeddings, key_bias):
    """One vision block with an additive per-key attention bias.

    Same computation as ``Qwen2VLVisionBlock.forward`` / ``Qwen2_5_VLVisionBlock.forward`` with
    their attention's SDPA path (transformers 5.23.0); the only change is the key bias. Attention
    runs through :func:`videoprune.models.vision_attention.segment_attention`: one SDPA call per
    distinct segment length, whatever the tower's attention implementation.
    """
    import importlib

    from .vision_attention import segment_attention

    mod = importlib.import_module(type(blk).__module__)
    attn = blk.attn
    h = blk.norm1(x)
    n = h.shape[0]
    q, k, v = attn.qkv(h).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    q, k = mod.apply_rotary_pos_emb_vision(q, k, cos, sin)
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # (H, S, D)
    # ---- videoprune change: SDPA within segments with the key bias as an additive float mask, ----
    # ---- one call per distinct segment length (segments of equal length stacked as a batch)  ----
    o = segment_attention(q, k, v, cu_seqlens, scale=attn.scaling, key_bias=key_bias)
    # ---- end videoprune change ----
    o = attn.proj(o.transpose(0, 1).reshape(n, -1).contiguous())
    x = x + o
    return x + blk.mlp(blk.norm2(x))
