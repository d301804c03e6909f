"""patch(model, cfg): reversible EVS pruning for a Hugging Face video VLM, for forward and generate.

How it works (no transformers forward is copied):
  1. the inner ``*Model.forward`` is wrapped only to remember the current call's inputs
     (``input_ids``, ``video_grid_thw``, pixels);
  2. the model runs its own code: encoders, scatter of features into ``inputs_embeds``, and
     its own full position ids (``get_rope_index`` for Qwen; generate's 1D ids or ``arange``);
  3. ``language_model.forward`` is wrapped: on prefill with video it reads the video features
     back from ``inputs_embeds``, selects with core.evs, builds a KeepPlan and calls the real
     language model with the gathered embeddings, positions and attention mask (length L');
  4. on decode steps (cache already filled) it maps generate's full-length attention mask
     ``(B, L + s)`` onto the cache's pruned layout ``(B, L' + s)``; position ids from generate
     are already the unpruned ones, and missing ones are rebuilt from the pruned rope delta;
  5. when ``labels`` ``(B, L)`` are passed to the outer ``*ForConditionalGeneration.forward``
     (training), that forward is wrapped to run without them, and the loss is computed by the
     model's own ``loss_function`` on the pruned logits with the labels gathered by the same
     KeepPlan (padding slots -> -100).

Steps 1-5 are the shared LLM-side layer (:mod:`videoprune.llm`), which STTS builds on too;
this module adds what is EVS's own: the pre-encoder stage (select from pixels, encode only the
kept tokens) and :func:`patch`, which also dispatches STTS configs to :mod:`videoprune.stts.hf`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .config import EVSConfig
from .llm import (
    PruneHandle,
    PruneStats,
    cached_length,
    check_unpatched,
    disabled,
    install_llm_input,
    install_loss,
    pruned_loss,
)

if TYPE_CHECKING:
    from .stts.config import STTSConfig

__all__ = ["EVSHandle", "PruneHandle", "PruneStats", "cached_length", "disabled", "patch", "pruned_loss"]


class EVSHandle(PruneHandle):
    """The :class:`~videoprune.llm.PruneHandle` of an EVS patch: adds the pre-encoder stage.

    With ``config.stage == "pre_encoder"`` the wrapped ``get_video_features`` selects from the
    pixels and encodes only the kept tokens; the prefill then reuses that keep mask.
    """

    @property
    def pre_encoder(self) -> bool:
        return self.config.stage == "pre_encoder"

    def encode_videos(self, encode, args: tuple, kwargs: dict, inputs: dict):
        """Pre-encoder EVS in place of ``get_video_features``: encode kept tokens only.

        Returns what the model's own ``get_video_features`` returns (per-video ``pooler_output``
        of full length, and Qwen3-VL's deepstack features likewise, so the model's placeholder
        scatter is unchanged); pruned rows are zeros and are dropped again at the LLM input with the
        same keep mask (the family adapter builds the output: ``pre_encoder_video_output``).
        """
        if not self.pre_encoder:
            return encode(*args, **kwargs)
        pixels, grid = inputs.get("pixel_values_videos"), inputs.get("video_grid_thw")
        if pixels is None or grid is None:
            raise ValueError("stage='pre_encoder' needs pixel_values_videos and video_grid_thw")
        encoded = self.adapter.encode_videos_pre_encoder(self.config, pixels, grid)
        self.encodes("pre_keep").add(pixels, encoded.keep)
        out = self.adapter.pre_encoder_video_output(encoded, grid)
        if (inputs.get("kwargs") or {}).get("return_dict") is False:
            return out.to_tuple()
        return out

    def keep_mask(self, layout, features: torch.Tensor, call: dict) -> torch.Tensor:
        """The keep mask the pre-encoder pass used for the call's videos, else the adapter's selection."""
        if self.pre_encoder:
            entry = self.encodes("pre_keep").find(call.get("pixel_values_videos"))
            if entry is not None:
                return entry[1]
        return super().keep_mask(layout, features, call)


def patch(model: torch.nn.Module, cfg: "EVSConfig | STTSConfig | None" = None) -> PruneHandle:
    """Make ``model(**inputs)`` and ``model.generate(**inputs)`` prune video tokens before the LLM.

    Args:
        model: a loaded ``*ForConditionalGeneration`` (or its inner ``*Model``) of a supported
            family (``videoprune.models.ADAPTERS``).
        cfg: an :class:`EVSConfig`; default ``EVSConfig()`` (rate 0.75). An
            :class:`~videoprune.stts.STTSConfig` patches STTS instead (Molmo2, Qwen2.5-VL) and
            returns an :class:`~videoprune.stts.hf.STTSHandle`; see docs/stts.md.

    Guarantees: kept tokens, and all text, keep their unpruned position ids; decoding continues
    from the unpruned next position; logits come back in the pruned layout ``(B, L', V)``.
    With ``labels`` ``(B, L)`` (keyword), ``outputs.loss`` is the model's causal-LM loss on that
    pruned layout, labels gathered by the same plan (= the loss of the explicit reference that
    gathers kept embeddings, original positions and labels). Labels on pruned video tokens are
    an error, as are labels on padding (they would silently drop out of the loss): set them to -100.

    Raises:
        ValueError: unsupported model family, or settings the family cannot honour.
        RuntimeError: the model is already patched.
    """
    from .models import adapter_for
    from .stts.config import STTSConfig

    if isinstance(cfg, STTSConfig):  # STTS prunes inside the vision encoder: its own wiring (stts/hf.py)
        from .stts.hf import patch_stts

        return patch_stts(model, cfg)
    cfg = EVSConfig() if cfg is None else cfg
    if not isinstance(cfg, EVSConfig):
        raise ValueError(f"cfg must be an EVSConfig, got {type(cfg).__name__}")
    check_unpatched(model)
    adapter = adapter_for(model)
    adapter.check_config(cfg)
    handle = EVSHandle(model=model, config=cfg, adapter=adapter)
    adapter.phase = handle.phase  # the pre-encoder selection inside the adapter is timed as "select"
    install_llm_input(handle)
    install_loss(handle)
    handle.attach()
    return handle
