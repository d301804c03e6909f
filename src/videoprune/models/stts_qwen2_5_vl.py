"""STTS for Qwen2.5-VL (transformers 5.23): prune merge units inside the windowed vision encoder.

One STTS "frame" is one temporal slice (``temporal_patch_size`` frames) and one pooled token is
one ``2 x 2`` merge unit. The encoder is driven by :mod:`videoprune.models.qwen_vision`:
blocks ``0..prune_at`` on every unit, the scorer on their output (reshaped from the encoder's
unit-major order to a patch grid with :func:`videoprune.stts.windows_to_grid`), block
``prune_at + 1`` with the key bias, then the later blocks on the kept units only (per-slice
``cu_seqlens``, windows restricted to kept units, rotary ids unchanged) and the merger on kept
units. Qwen2.5-VL taps no intermediate layer, so nothing needs scattering back inside the ViT.

LLM side: the pruning at the language model's input that EVS uses is reused as is
(:func:`videoprune.llm.install_llm_input`): the model builds its own M-RoPE ids on the full sequence;
``get_video_features`` returns the dense feature layout (zeros at pruned units, so the model's
placeholder check holds) and :meth:`Qwen2_5_VLSTTS.select` hands the STTS keep mask to
:func:`videoprune.core.plan.build_plan`.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

from ..core.evs import normalize_grids
from ..llm import bound_call, install_llm_input
from ..stts.config import STTSConfig
from ..stts.family import STTSFamily
from ..stts.hf import STTSHandle, score_and_select
from ..stts.scorer import grid_to_windows, windows_to_grid
from . import qwen_vision as QV
from .qwen2_5_vl import Qwen2_5_VLAdapter

__all__ = ["Qwen2_5_VLSTTS", "scorer_fingerprint"]


class Qwen2_5_VLSTTS(Qwen2_5_VLAdapter, STTSFamily):
    """The Qwen2.5-VL EVS adapter with the STTS keep mask as its selection (its LLM side is EVS's)."""

    def __init__(self, model: torch.nn.Module, cfg: STTSConfig):
        super().__init__(model)
        self.visual = self.inner.visual
        depth = len(self.visual.blocks)
        if cfg.prune_at + 2 > depth:
            raise ValueError(f"prune_at={cfg.prune_at} leaves no block to prune in a {depth}-block encoder; "
                             f"prune_at must be <= {depth - 2}")
        merge = self.spatial_merge_size
        if cfg.pool is not None and cfg.pool != merge:
            raise ValueError(f"pool={cfg.pool} must equal Qwen2.5-VL's spatial_merge_size={merge} (one LLM token per unit)")
        self._handle: STTSHandle | None = None

    # ---- facts the handle needs ------------------------------------------------------------------
    @property
    def vision_width(self) -> int:
        return int(self.config.vision_config.hidden_size)

    @property
    def vision_device(self) -> torch.device:
        return next(self.visual.parameters()).device

    def pool(self, cfg: STTSConfig) -> int:
        return self.spatial_merge_size

    def fingerprint_fields(self, cfg: STTSConfig) -> dict[str, Any]:
        return scorer_fingerprint(self.config.vision_config, cfg.prune_at, self.pool(cfg))

    # ---- encoder ------------------------------------------------------------------------------------
    def _score_dense(self, handle: STTSHandle, pixels: torch.Tensor, grid_thw: torch.Tensor, training: bool):
        """Blocks ``0..prune_at`` on every unit, then the scorer: ``(hidden (N_units, C), unit layout, selections)``."""
        visual, m = self.visual, self.spatial_merge_size
        full = QV.unit_layout(visual, grid_thw)
        h = QV.run_blocks(visual, QV.embed_patches(visual, pixels, full), full, blocks=range(0, handle.config.prune_at + 1))
        grids = [tuple(int(v) for v in r) for r in grid_thw.tolist()]
        parts = h.split([t * hh * ww for t, hh, ww in grids])
        pergrid = [windows_to_grid(x, t, hh, ww, m) for x, (t, hh, ww) in zip(parts, grids)]
        return h, full, score_and_select(handle, pergrid, m, training)

    def encode(self, handle: STTSHandle, pixels: torch.Tensor, grid_thw: torch.Tensor):
        """``(dense features (N_units, D) with zeros at pruned units, keep_units (N_units,) bool, selections)``."""
        visual, m, k = self.visual, self.spatial_merge_size, handle.config.prune_at
        h, full, sels = self._score_dense(handle, pixels, grid_thw, self.inner.training)
        bias = None
        if sels[0].bias is not None:
            bias = torch.cat([grid_to_windows(s.bias.unsqueeze(-1), m).squeeze(-1) for s in sels]).to(h.device)
        h = QV.run_blocks(visual, h, full, blocks=[k + 1], key_bias=bias)
        keep = torch.cat([s.keep_flat for s in sels]).to(h.device)
        kept = QV.encode_kept_units(visual, None, grid_thw, keep, start_block=k + 2, hidden=h)
        dense = kept.new_zeros(keep.shape[0], kept.shape[-1]).index_copy(0, torch.nonzero(keep).flatten(), kept)
        return dense, keep, sels

    # ---- EVS adapter hooks ------------------------------------------------------------------------------
    def select(self, cfg, layout, features, call) -> torch.Tensor:
        """The STTS keep mask of the features this call carries (recorded by the encoder wrapper)."""
        cache = self._handle.encodes("stts")
        encoded = (call.get("mm_encoder_outputs") or {}).get("video")
        entry = cache.latest() if encoded is None else cache.find(encoded)
        if entry is None:
            raise ValueError("videoprune cannot prune Qwen2.5-VL video features encoded outside the patched model: "
                             "pass pixel_values_videos instead")
        return entry[1]

    # ---- installation ----------------------------------------------------------------------------------
    def install(self, handle: STTSHandle) -> None:
        self._handle = handle
        inner = self.inner
        encode_orig = inner.get_video_features
        sig = inspect.signature(encode_orig)

        @functools.wraps(encode_orig)
        def get_video_features(*args, **kwargs):
            a = bound_call(sig, args, kwargs)
            if not handle.active:
                return encode_orig(**a)
            pixels, grid = a["pixel_values_videos"], a.get("video_grid_thw")
            if grid is None:
                raise ValueError("STTS on Qwen2.5-VL needs video_grid_thw")
            out = encode_orig(**a) if handle.config.ratio == 0 else None
            if handle.config.ratio == 0:
                keep = torch.ones(sum(t * h * w for t, h, w in normalize_grids(grid, self.spatial_merge_size)),
                                  dtype=torch.bool)
                if self.inner.training and handle.scorer is not None:  # aux loss on the side, outputs untouched
                    self._side_scores(handle, pixels, grid)
            else:
                from transformers.modeling_outputs import BaseModelOutputWithPooling

                dense, keep, _ = self.encode(handle, pixels.type(self.visual.dtype), grid)
                sizes = (grid.prod(-1) // self.spatial_merge_size ** 2).tolist()
                out = BaseModelOutputWithPooling(pooler_output=torch.split(dense, sizes))
            handle.encodes("stts").add(out, keep)
            return out

        handle.swap(inner, "get_video_features", get_video_features)
        install_llm_input(handle)  # pruning at the language model's input, with select() above

    def _side_scores(self, handle: STTSHandle, pixels: torch.Tensor, grid: torch.Tensor) -> None:
        """ratio 0 in training: the scorer runs on the side for the auxiliary loss; the encoder output is untouched."""
        self._score_dense(handle, pixels.type(self.visual.dtype), grid, True)


def scorer_fingerprint(vision_config: Any, prune_at: int, pool: int) -> dict[str, Any]:
    """The fields a Qwen2.5-VL STTS scorer file is stamped with: the tower's geometry, ``prune_at`` and ``pool``.

    One definition for the HF integration (which writes and checks them) and the vLLM plug-in
    (which checks a scorer file against the checkpoint it serves).
    """
    vc = vision_config
    return {"model_type": "qwen2_5_vl", "hidden_size": int(vc.hidden_size), "depth": int(vc.depth),
            "patch_size": int(vc.patch_size), "temporal_patch_size": int(vc.temporal_patch_size),
            "num_heads": int(vc.num_heads), "window_size": int(vc.window_size),
            "fullatt_block_indexes": [int(v) for v in vc.fullatt_block_indexes],
            "prune_at": int(prune_at), "pool": int(pool)}
