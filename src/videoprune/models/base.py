"""The adapter contract: what videoprune needs to know about one family of HF video VLMs.

An adapter never re-implements the model's forward. The patch (see :mod:`videoprune.patch`)
lets the model build its own full ``inputs_embeds`` and position ids, intercepts them at the
language model's input, and asks the adapter only family-specific questions: where the video
tokens sit and on which grid (:meth:`ModelAdapter.video_layout`), how to compute the pixel
criterion, and how to prune any extra per-token language-model inputs (Qwen3-VL deepstack).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..config import EVSConfig
from ..core.evs import embedding_dissimilarity, random_dissimilarity, select_by_rate, select_by_threshold
from ..core.plan import KeepPlan

__all__ = ["ModelAdapter", "PreEncodedVideos", "VideoLayout"]


@dataclass(frozen=True)
class VideoLayout:
    """Where the video tokens of one batch are and how they are arranged.

    Attributes:
        placeholder_mask: ``(B, L)`` bool, True at every position the model fills with video
            features (row-major over the batch = order of the concatenated features).
        grid_thw: per video, the grid of its *prunable* tokens in the form core.evs takes
            (pre-merge ``(T, H, W)``, with ``spatial_merge_size``).
        spatial_merge_size: as in :func:`videoprune.core.evs.normalize_grids`.
        grid_token_mask: ``(N_placeholders,)`` bool, True for tokens on the grid; False for
            tokens EVS must always keep (LLaVA-OneVision's newline). None means all are on it.
    """

    placeholder_mask: torch.Tensor
    grid_thw: list[tuple[int, int, int]]
    spatial_merge_size: int
    grid_token_mask: torch.Tensor | None = None


@dataclass(frozen=True)
class PreEncodedVideos:
    """What pre-encoder EVS computed for the videos of one encoder call (kept tokens only).

    Attributes:
        keep: ``(N_tokens,)`` bool over all video tokens of the call (raster order, videos
            concatenated): the pixel-criterion selection.
        features: ``(K, D)`` LLM-side features of the kept tokens, ``K = keep.sum()``, raster order.
        deepstack: per deepstack layer (Qwen3-VL), ``(K, D)`` features of the kept tokens; ``()``
            for families without deepstack.
    """

    keep: torch.Tensor
    features: torch.Tensor
    deepstack: tuple[torch.Tensor, ...] = ()

    def scatter(self, kept: torch.Tensor) -> torch.Tensor:
        """``(N_tokens, D)``: ``kept`` rows at the kept tokens, zeros at pruned ones (never read)."""
        full = kept.new_zeros(self.keep.shape[0], kept.shape[1])
        full[self.keep.to(kept.device)] = kept
        return full


def _untimed(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


class ModelAdapter:
    """Family-specific knowledge. Subclasses set the class attributes and :meth:`video_layout`."""

    #: ``config.model_type`` values this adapter serves.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: 3 for M-RoPE ids ``(3, B, L)``, 1 for 1D ids ``(B, L)``.
    position_axes: ClassVar[int] = 1
    #: whether ``criterion="pixel"`` can be computed for this family.
    supports_pixel_criterion: ClassVar[bool] = False
    #: whether ``stage="pre_encoder"`` (encoder runs on kept tokens only) is implemented.
    supports_pre_encoder: ClassVar[bool] = False

    def __init__(self, model: torch.nn.Module):
        self.model = model
        if hasattr(model, "model") and hasattr(model.model, "language_model"):
            self.inner = model.model
        elif hasattr(model, "language_model"):
            self.inner = model
        else:
            raise ValueError(f"{type(model).__name__} has no .language_model (nor .model.language_model); "
                             "pass the *ForConditionalGeneration model or its inner *Model")
        self.language_model = self.inner.language_model
        self.config = getattr(model, "config")
        # criterion='random' draws fresh scores per call; next() on a count is atomic under the
        # GIL, so concurrent calls never share a draw (a += on an attribute could)
        self._random_calls = itertools.count(1)
        #: ``phase(name)``: a context manager timing a phase of the call (``"select"`` inside the
        #: pre-encoder pass); the handle that installs this adapter points it at its own timer
        #: (:meth:`videoprune.llm.PruneHandle.phase`). Untimed until then.
        self.phase: Callable[[str], contextlib.AbstractContextManager] = _untimed

    # ---- checks ------------------------------------------------------------------------------
    def check_config(self, cfg: EVSConfig, pre_encoder_types: Iterable[str] = ()) -> None:
        """Raise ValueError for settings this family cannot honour (never silently ignore them).

        ``pre_encoder_types``: the model_types that do support ``stage="pre_encoder"``, named in
        that error (the registry's list, which :func:`videoprune.patch` passes: this module sits
        below the registry and never imports it).
        """
        if cfg.apply_to_images:
            raise ValueError("apply_to_images=True is not supported: an image is a single temporal slice, "
                             "which EVS always keeps whole, so it would prune nothing")
        if cfg.stage == "pre_encoder" and not self.supports_pre_encoder:
            ok = sorted(pre_encoder_types)
            where = f"; it is supported for: {', '.join(ok)}" if ok else ""
            raise ValueError(f"stage='pre_encoder' is not supported for {self.config.model_type}{where}. "
                             "Use stage='post_encoder'")
        if cfg.criterion == "pixel" and not self.supports_pixel_criterion:
            raise ValueError(f"criterion='pixel' is not supported for {self.config.model_type}; "
                             "use criterion='embedding'")

    # ---- family hooks --------------------------------------------------------------------------
    def video_layout(self, call: dict[str, Any]) -> VideoLayout | None:
        """The video layout of the inner model's current call, or None when it has no video."""
        raise NotImplementedError

    def pixel_dissimilarity(self, call: dict[str, Any], layout: VideoLayout) -> torch.Tensor:
        raise ValueError(f"criterion='pixel' is not supported for {self.config.model_type}")

    def encode_videos_pre_encoder(self, cfg: EVSConfig, pixel_values_videos: torch.Tensor,
                                  video_grid_thw: torch.Tensor) -> PreEncodedVideos:
        """Pre-encoder EVS: select from pixels, then encode only the kept tokens."""
        raise ValueError(f"stage='pre_encoder' is not supported for {self.config.model_type}")

    def pre_encoder_video_output(self, encoded: PreEncodedVideos, video_grid_thw: torch.Tensor):
        """What the model's own ``get_video_features`` returns (``return_dict=True``), built from
        ``encoded``: full-length per-video outputs, so the model's placeholder scatter is unchanged;
        pruned rows are zeros and are dropped again at the LLM input with the same keep mask."""
        raise ValueError(f"stage='pre_encoder' is not supported for {self.config.model_type}")

    def prune_lm_kwargs(self, kwargs: dict[str, Any], plan: KeepPlan) -> dict[str, Any]:
        """Prune extra per-token language-model inputs; the base family has none."""
        return kwargs

    # ---- shared selection ------------------------------------------------------------------------
    def select(self, cfg: EVSConfig, layout: VideoLayout, features: torch.Tensor, call: dict[str, Any]) -> torch.Tensor:
        """``(N_grid,)`` bool keep mask over the grid tokens, by core.evs (rate or threshold mode)."""
        grid, merge = layout.grid_thw, layout.spatial_merge_size
        if cfg.criterion == "embedding":
            d = embedding_dissimilarity(features, grid, merge)
        elif cfg.criterion == "random":
            # a fresh, reproducible draw per call, so videos do not all share one pattern
            d = random_dissimilarity(grid, merge, seed=cfg.seed * 1_000_003 + next(self._random_calls),
                                     device=features.device)
        else:
            d = self.pixel_dissimilarity(call, layout)
        if cfg.rate is not None:
            return select_by_rate(d, grid, merge, cfg.rate)
        return select_by_threshold(d, grid, merge, cfg.threshold, cfg.min_keep_fraction, cfg.max_keep_fraction)
