"""STTS for Molmo2 (transformers 5.23-5.25 ``models/molmo2``): in-ViT pruning, pooled tokens kept out of the LLM.

Molmo2's video path (read from ``modeling_molmo2.py`` / ``video_processing_molmo2.py``, 5.23.0):
every frame is one ``Hp x Wp`` patch crop (27 x 27 at 378 px) through a SigLIP-style ViT where
frames are the attention batch; the outputs of several layers (``adapter_config
.vision_feature_layer``, e.g. ``[-3, -9]``) are concatenated per patch and each
``pool x pool`` window (3 x 3; ``video_token_pooling`` lists its patch indices) is
attention-pooled and projected into one LLM token. The LLM sees, per frame, a timestamp text,
``<frame_start>``, one ``<im_patch>`` per pooled token (optionally ``<im_col>`` per row) and
``<frame_end>``; positions are 1D.

The STTS encoder here reuses the model's own layer modules (no copied forward): blocks
``0..prune_at`` dense, block ``prune_at + 1`` with the key bias as an additive attention mask,
then the later blocks on FFD-packed rows with a block-diagonal mask (:mod:`videoprune.stts
.packing`); each tapped layer is scattered back to the dense layout, and the adapter pools
only the kept windows. Blocks after the deepest tap are skipped (they never reach the LLM,
unpatched or not).

LLM side: Molmo2 builds its 4D mask (video tokens in one bidirectional block, from
``mm_token_type_ids``) inside ``Molmo2Model.forward``, so the placeholders are removed at that
forward's input rather than at the language model's: the inner forward is called with the kept
``input_ids`` / ``mm_token_type_ids`` / attention mask (:meth:`KeepPlan.gather`), the unpruned
positions of the kept tokens (:func:`prune_positions`) and the kept features as
``mm_encoder_outputs``; prefill and decode go through the LLM-side layer EVS uses too
(:func:`videoprune.llm.route_call`, :func:`videoprune.llm.record_prefill`,
:func:`videoprune.llm.decode_kwargs`).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

from ..core.plan import build_plan, video_keep_stats
from ..llm import bound_call, decode_kwargs, full_positions, record_prefill, route_call, time_prefill
from ..stts.config import STTSConfig
from ..stts.hf import STTSHandle, additive_mask, score_and_select
from ..stts.packing import build_layout, pack, scatter_back
from .molmo2 import feature_taps, tapped_depth
from .molmo2_layout import pooling_is_per_video, to_global, video_pooling

__all__ = ["Molmo2STTS"]


class Molmo2STTS:
    """STTS integration for ``Molmo2ForConditionalGeneration`` / ``Molmo2Model``."""

    position_axes = 1

    def __init__(self, model: torch.nn.Module, cfg: STTSConfig):
        self.model = model
        self.inner = model.model if hasattr(model, "model") and hasattr(model.model, "vision_tower") else model
        if not hasattr(self.inner, "vision_tower") or not hasattr(self.inner, "multi_modal_projector"):
            raise ValueError(f"{type(model).__name__} does not look like a Molmo2 model (no vision_tower/multi_modal_projector)")
        self.config = model.config
        self.vision = self.inner.vision_tower
        vc = self.config.vision_config
        self.vision_config = vc
        self.hp = int(vc.image_size[0]) // int(vc.patch_size)
        self.wp = int(vc.image_size[1]) // int(vc.patch_size)
        self.taps = feature_taps(self.config)  # hidden_states[k]: k = 0 the embeddings, else block k - 1's output
        self.depth = tapped_depth(self.config)  # blocks that can influence the LLM
        if cfg.prune_at + 2 > self.depth:
            raise ValueError(f"prune_at={cfg.prune_at} leaves no block to prune: the deepest tapped ViT layer is block "
                             f"{self.depth - 1}; prune_at must be <= {self.depth - 2}")
        attn = getattr(vc, "_attn_implementation", None) or "sdpa"
        if attn not in ("sdpa", "eager"):
            raise ValueError(f"STTS on Molmo2 needs the vision tower's attention to be 'sdpa' or 'eager' (packed rows use "
                             f"an additive block-diagonal mask), got {attn!r}")
        self._cfg = cfg

    # ---- facts the handle needs ------------------------------------------------------------------
    @property
    def vision_width(self) -> int:
        return int(self.vision_config.hidden_size)

    @property
    def vision_device(self) -> torch.device:
        return self.vision.positional_embedding.device

    def pool(self, cfg: STTSConfig) -> int:
        return int(cfg.pool) if cfg.pool is not None else 3

    def fingerprint_fields(self, cfg: STTSConfig) -> dict[str, Any]:
        vc = self.vision_config
        return {"model_type": "molmo2", "hidden_size": int(vc.hidden_size), "num_hidden_layers": int(vc.num_hidden_layers),
                "patch_size": int(vc.patch_size), "image_size": [int(v) for v in vc.image_size],
                "num_attention_heads": int(vc.num_attention_heads),
                "vision_feature_layer": [int(v) for v in self.config.adapter_config.vision_feature_layer],
                "prune_at": cfg.prune_at, "pool": self.pool(cfg)}

    # ---- encoder ------------------------------------------------------------------------------------
    def _check_pooling(self, video_token_pooling: torch.Tensor, frames_per_video: list[int], pool: int) -> None:
        """The STTS windows must be the adapter's pooling windows: regular ``pool x pool`` blocks in raster order.

        Checked in the installed transformers' layout (:mod:`videoprune.models.molmo2_layout`).
        """
        expect = video_pooling(frames_per_video, self.hp, self.wp, pool).to(video_token_pooling.device)
        if video_token_pooling.shape != expect.shape or not torch.equal(video_token_pooling.long(), expect):
            layout = "per-video" if pooling_is_per_video() else "global"
            raise ValueError("video_token_pooling is not the regular pool x pool window layout STTS scores "
                             f"(pool={pool}, {self.hp}x{self.wp} patches per frame, {layout} indices as the installed "
                             "transformers expects); set STTSConfig.pool to the processor's pooling_size")

    def encode(self, handle: STTSHandle, pixel_values_videos: torch.Tensor, video_token_pooling: torch.Tensor,
               video_grids: torch.Tensor):
        """STTS video features: ``(pooler_output, selections)``; pooler_output holds each video's KEPT tokens."""
        cfg, pool = handle.config, self.pool(handle.config)
        vt, p = self.vision, self.hp * self.wp
        if pixel_values_videos.dim() != 3 or pixel_values_videos.shape[1] != p:
            raise ValueError(f"pixel_values_videos must be (frames, {p}, patch_pixels), got {tuple(pixel_values_videos.shape)}")
        frames_per_video = [int(t) for t in video_grids[:, 0].tolist()]
        n_frames = sum(frames_per_video)
        if n_frames != pixel_values_videos.shape[0]:
            raise ValueError(f"video_grids counts {n_frames} frames, pixel_values_videos has {pixel_values_videos.shape[0]}")
        for t, rows, cols in video_grids.tolist():
            if (rows, cols) != (self.hp // pool, self.wp // pool):
                raise ValueError(f"video_grids row {(t, rows, cols)} does not match {self.hp // pool}x{self.wp // pool} "
                                 f"pooled tokens per frame (pool={pool})")
        self._check_pooling(video_token_pooling, frames_per_video, pool)
        training = self.inner.training
        prune = cfg.ratio > 0

        x = vt.patch_embedding(pixel_values_videos.to(dtype=vt.dtype))
        x = x + vt.positional_embedding[None, :, :].to(x)
        taps: dict[int, torch.Tensor] = {0: x}
        for i in range(cfg.prune_at + 1):
            x = vt.layers[i](x, None)
            taps[i + 1] = x
        c = x.shape[-1]
        grids = list(x.view(n_frames, self.hp, self.wp, c).split(frames_per_video))
        sels = score_and_select(handle, grids, pool, training) if (prune or training) else None

        i = cfg.prune_at + 1
        if not prune:  # do-nothing path: the unpatched computation
            for j in range(i, self.depth):
                x = vt.layers[j](x, None)
                taps[j + 1] = x
            keep_tokens = None
        else:
            bias = None
            if sels[0].bias is not None:
                bias = torch.cat([s.bias for s in sels]).reshape(n_frames, 1, 1, p)
            x = vt.layers[i](x, additive_mask(None, bias, x.dtype) if bias is not None else None)
            taps[i + 1] = x
            keep_patch = torch.cat([s.selection.keep_patches.reshape(-1, p) for s in sels]).to(x.device)
            layout = build_layout(keep_patch)
            rows = pack(x, layout)
            mask = additive_mask(layout.attn_mask.to(x.device), None, x.dtype)
            for j in range(i + 1, self.depth):
                rows = vt.layers[j](rows, mask)
                if (j + 1) in self.taps:
                    taps[j + 1] = scatter_back(rows, layout, (n_frames, p, c))
            keep_tokens = torch.cat([s.keep_flat for s in sels]).to(x.device)

        features = torch.cat([taps[k] for k in self.taps], dim=-1)
        per_frame = (self.hp // pool) * (self.wp // pool)
        pooling = to_global(video_token_pooling, [t * per_frame for t in frames_per_video],
                            [t * p for t in frames_per_video])  # the projector pools all videos' patches at once
        if keep_tokens is not None:
            pooling = pooling[keep_tokens.to(pooling.device)]
        pooled = self.inner.multi_modal_projector(features, pooling).last_hidden_state
        if keep_tokens is None:
            counts = [t * per_frame for t in frames_per_video]
            keeps = [torch.ones(n, dtype=torch.bool, device=pooled.device) for n in counts]
        else:
            keeps = [s.keep_flat.to(pooled.device) for s in sels]
            counts = [int(k.sum()) for k in keeps]
        return tuple(torch.split(pooled, counts)), keeps

    # ---- installation ----------------------------------------------------------------------------------
    def install(self, handle: STTSHandle) -> None:
        """Wrap ``get_video_features`` (the STTS encoder) and the inner forward (the LLM-side pruning)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        inner = self.inner
        encode_orig, inner_fwd = inner.get_video_features, inner.forward
        enc_sig, inner_sig = inspect.signature(encode_orig), inspect.signature(inner_fwd)

        @functools.wraps(encode_orig)
        def get_video_features(*args, **kwargs):
            if not handle.active:
                with handle.phase("encode"):
                    return encode_orig(*args, **kwargs)
            a = enc_sig.bind_partial(*args, **kwargs).arguments
            with handle.phase("encode"):
                pooled, keeps = self.encode(handle, a["pixel_values_videos"], a["video_token_pooling"], a["video_grids"])
            out = BaseModelOutputWithPooling(pooler_output=pooled)
            handle.encodes("stts").add(out, keeps, a["video_grids"])
            return out

        @functools.wraps(inner_fwd)
        def forward(*args, **kwargs):
            return route_call(handle, inner_fwd, bound_call(inner_sig, args, kwargs),
                              functools.partial(self._prefill, handle), _decode_with_mask, timed=False)

        handle.swap(inner, "get_video_features", get_video_features)
        handle.swap(inner, "forward", forward)
        time_prefill(handle, inner.language_model)  # the prefill phase is the language model's forward

    def _prefill(self, handle: STTSHandle, call: dict) -> dict:
        """The inner forward's kwargs with the pruned placeholders removed (the kept features as ``mm_encoder_outputs``)."""
        encoded = (call.get("mm_encoder_outputs") or {}).get("video")
        if call.get("pixel_values_videos") is not None:
            encoded = self.inner.get_video_features(call["pixel_values_videos"], call["video_token_pooling"],
                                                    call["video_grids"])
        if encoded is None:
            return call
        entry = handle.encodes("stts").find(encoded)
        if entry is None:
            raise ValueError("videoprune cannot prune Molmo2 video features encoded outside the patched model "
                             "(or expanded, e.g. num_return_sequences > 1): pass pixel_values_videos instead")
        _, keeps, grids = entry
        ids = call.get("input_ids")
        if ids is None:
            raise ValueError("videoprune needs input_ids (not inputs_embeds) on Molmo2 calls with video")
        placeholder = ids == self.config.image_patch_id
        keep = torch.cat(keeps).to(ids.device)
        if int(placeholder.sum()) != keep.numel():
            raise ValueError(f"{int(placeholder.sum())} <im_patch> placeholders but the video features hold {keep.numel()} tokens")
        attn = call.get("attention_mask")
        if attn is not None and not (isinstance(attn, torch.Tensor) and attn.dim() == 2):
            raise ValueError("videoprune needs a 2D attention mask (B, L) for Molmo2; 4D masks are not supported")
        b, length = ids.shape
        plan = build_plan(placeholder, keep, attn, padding_side="left")
        full = full_positions(call, b, length, ids.device, axes=self.position_axes)
        positions, new_mask = record_prefill(handle, plan, full, attn, video_keep_stats(keep, grids), ids.device)
        real = plan.attention_mask.to(ids.device).bool()
        pad_id = 0 if self.config.image_patch_id != 0 else 1
        new_ids = plan.gather(ids).masked_fill(~real, pad_id)
        out = dict(call, input_ids=new_ids, attention_mask=new_mask, position_ids=positions,
                   pixel_values_videos=None, video_token_pooling=None, video_grids=None,
                   mm_encoder_outputs={**(call.get("mm_encoder_outputs") or {}), "video": encoded})
        if call.get("mm_token_type_ids") is not None:
            out["mm_token_type_ids"] = plan.gather(call["mm_token_type_ids"].to(ids.device)).masked_fill(~real, 0)
        return out


def _decode_with_mask(handle: STTSHandle, call: dict, past: int) -> dict:
    """:func:`videoprune.llm.decode_kwargs`, with the all-ones mask generate drops put back (the pruned cache may be padded)."""
    st = handle.decode_state
    if call.get("attention_mask") is None:
        ids = call.get("input_ids")
        x = ids if ids is not None else call["inputs_embeds"]
        q = x.shape[1]
        call = dict(call, attention_mask=torch.ones(x.shape[0], st.full_len + past - st.pruned_len + q,
                                                    dtype=torch.long, device=x.device))
    return decode_kwargs(handle, call, past)
