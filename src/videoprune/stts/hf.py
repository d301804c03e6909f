"""STTS on Hugging Face models: ``videoprune.patch(model, STTSConfig(...))`` and its handle.

What a patched model does on a call with video (methods.md §2):

1. the vision encoder runs blocks ``0..prune_at`` on every patch;
2. the scorer (or a baseline) scores every pooled token from those hidden states; in training
   the temporal auxiliary loss is computed here (``handle.aux_loss`` and ``outputs.stts_aux_loss``);
3. block ``prune_at + 1`` runs with the soft key bias (learned method only): the path by which
   the task loss reaches the scorer;
4. hard selection (global top-k per video, frame 0 kept), then the remaining blocks run on the
   kept patches only (family-specific: FFD-packed rows with a block-diagonal mask for Molmo2,
   per-frame variable-length attention for Qwen2.5-VL), scattered back to the dense layout for
   multi-layer feature taps;
5. the projector/merger runs on kept tokens only, and the matching placeholders are removed
   from the LLM sequence with :func:`videoprune.core.plan.build_plan` and
   :func:`videoprune.core.positions.prune_positions` (kept tokens and text keep their unpruned
   positions; decoding continues from the unpruned next position).

``ratio = 0`` is the do-nothing path: the model computes exactly what it computes unpatched
(no bias, no removal); in training the scorer still runs on the side to give the aux loss.

The family-specific parts live in ``videoprune.models.stts_<family>``, each a subclass of
:class:`~videoprune.stts.family.STTSFamily` (the members called here); this module holds the
handle, the dispatch and the pieces every family shares. The LLM side (handle base, prefill and
decode, encode cache, timings, labels and loss) is the layer EVS uses too, :mod:`videoprune.llm`.
transformers is never imported here.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..llm import PruneHandle, check_unpatched, install_loss, per_thread
from ..models.registry import FAMILIES_BY_TYPE
from ..validate import check_regular_file
from .bias import key_bias
from .config import STTSConfig
from .family import STTSFamily
from .loss import temporal_aux_loss
from .scorer import STTSScorer, window_mean
from .select import STTSSelection, method_scores, select_tokens
from .weights import load_scorer_state, save_scorer_state

__all__ = ["STTS_FAMILIES", "STTSHandle", "VideoSelection", "additive_mask", "patch_stts", "score_and_select",
           "select_videos"]

#: ``model_type -> "module:Class"`` of the STTS family integration (imported lazily), from the family registry.
STTS_FAMILIES: dict[str, str] = {t: f.stts for t, f in FAMILIES_BY_TYPE.items() if f.stts is not None}


@dataclass(eq=False)
class STTSHandle(PruneHandle):
    """:class:`~videoprune.llm.PruneHandle` plus the scorer and the last auxiliary loss.

    Attributes:
        scorer: the :class:`STTSScorer` (float32, on the vision tower's device); None for the
            baselines. It is *not* a submodule of the model (so ``save_pretrained`` never
            includes it): give ``handle.scorer.parameters()`` to the optimizer.
        aux_loss: the temporal auxiliary loss of the calling thread's last training-mode call
            with video (already weighted by ``aux_loss_weight``), else None.
        last_selection: per video of the calling thread's last call, the :class:`VideoSelection`.

    Thread safety as for :class:`~videoprune.llm.PruneHandle`: ``stats``, ``aux_loss`` and
    ``last_selection`` are per thread. The families keep their encodes in ``encodes("stts")``.
    """

    scorer: torch.nn.Module | None = None
    fingerprint_fields: dict = field(default_factory=dict)

    kept_after_remove: ClassVar[tuple[str, ...]] = PruneHandle.kept_after_remove + ("aux_loss", "last_selection")

    aux_loss = per_thread("aux_loss", "the calling thread's last auxiliary loss (training), else None")
    last_selection = per_thread("last_selection", "per video of the calling thread's last call", default=())

    def begin_forward(self) -> None:
        """Forget the previous call's plan and auxiliary loss."""
        super().begin_forward()
        self.aux_loss = None

    def finish_forward(self, out):
        """``outputs.stts_aux_loss`` carries the call's auxiliary loss (None outside training)."""
        out.stts_aux_loss = self.aux_loss
        return out

    def _scorer_arch(self) -> dict:
        cfg = self.config
        return {"width": self.scorer.width, "pool": self.scorer.pool, "mlp_hidden": cfg.mlp_hidden, "attn_dim": cfg.attn_dim}

    def save_scorer(self, path: str) -> None:
        """Save the scorer's weights to ``path`` (safetensors) with the model's config fingerprint."""
        if self.scorer is None:
            raise ValueError(f"method={self.config.method!r} has no learned scorer to save (use method='learned')")
        save_scorer_state(path, self.scorer.state_dict(), self.fingerprint_fields, self._scorer_arch())

    def load_scorer(self, path: str) -> None:
        """Load scorer weights saved by :meth:`save_scorer`; ValueError on a fingerprint mismatch."""
        if self.scorer is None:
            raise ValueError(f"method={self.config.method!r} has no learned scorer to load into")
        state = load_scorer_state(path, self.fingerprint_fields, self._scorer_arch())
        self.scorer.load_state_dict(state)


@dataclass(frozen=True)
class VideoSelection:
    """The STTS outcome for one video: its selection, and the learned scores if any.

    ``selection.keep_pooled`` is ``(T, H', W')`` in the raster order of the video's LLM tokens.
    """

    selection: STTSSelection
    scores: torch.Tensor | None
    bias: torch.Tensor | None  # (T, Hp, Wp) key bias for block prune_at + 1, learned method only

    @property
    def keep_flat(self) -> torch.Tensor:
        return self.selection.keep_pooled.reshape(-1)


def patch_stts(model: torch.nn.Module, cfg: STTSConfig) -> STTSHandle:
    """Patch ``model`` with STTS; see the module docstring. Called by :func:`videoprune.patch`."""
    check_unpatched(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    target = STTS_FAMILIES.get(model_type)
    if target is None:
        raise ValueError(f"STTS has no integration for model_type {model_type!r} ({type(model).__name__}); "
                         f"supported: {', '.join(sorted(STTS_FAMILIES))}")
    if cfg.scorer_path is not None:
        if cfg.method != "learned":
            raise ValueError(f"scorer_path is set but method={cfg.method!r} uses no scorer")
        # a missing file must be reported as such, before the family checks the settings beside it
        check_regular_file(cfg.scorer_path, "scorer file")
    mod, name = target.split(":")
    cls = getattr(importlib.import_module(mod), name)
    if not (isinstance(cls, type) and issubclass(cls, STTSFamily)):
        raise TypeError(f"STTS integration {target} must subclass videoprune.stts.family.STTSFamily")
    family = cls(model, cfg)
    handle = STTSHandle(model=model, config=cfg, adapter=family)
    handle.fingerprint_fields = family.fingerprint_fields(cfg)
    if cfg.method == "learned":
        scorer = STTSScorer(family.vision_width, family.pool(cfg), cfg.mlp_hidden, cfg.attn_dim)
        handle.scorer = scorer.to(family.vision_device)
        if cfg.scorer_path is not None:
            handle.load_scorer(cfg.scorer_path)
    family.install(handle)
    install_loss(handle)  # labels follow the pruned layout, as with EVS
    handle.attach()
    return handle


def additive_mask(allowed: torch.Tensor | None, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Float additive attention mask from a bool ``allowed`` mask and/or an additive ``bias`` (both broadcastable)."""
    if allowed is None and bias is None:
        return None
    out = None
    if allowed is not None:
        neg = torch.finfo(dtype).min
        out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, neg)
    if bias is not None:
        b = bias.to(dtype)
        out = b if out is None else out + b
    return out


def score_and_select(handle, grids: list[torch.Tensor], pool: int, training: bool) -> list[VideoSelection]:
    """Score and select every video from its layer-``prune_at`` hidden states (:func:`select_videos`).

    ``handle``: an :class:`STTSHandle` (the time counts as its ``select`` phase), or any object
    with ``config`` and ``scorer`` (the vLLM plug-in passes a namespace; untimed). The auxiliary
    loss goes to ``handle.aux_loss`` and the selections to ``handle.last_selection``.
    """
    with handle.phase("select") if isinstance(handle, PruneHandle) else contextlib.nullcontext():
        out, handle.aux_loss = select_videos(handle.config, handle.scorer, grids, pool, training)
    handle.last_selection = tuple(out)
    return out


def select_videos(cfg: STTSConfig, scorer: STTSScorer | None, grids: list[torch.Tensor], pool: int,
                  training: bool) -> tuple[list[VideoSelection], torch.Tensor | None]:
    """Per video, the :class:`VideoSelection`; and the auxiliary loss (mean over videos), else None.

    Args:
        grids: per video, ``(T, Hp, Wp, C)`` hidden states after block ``prune_at``.
        pool: merge window side.
        training: compute the auxiliary loss (learned method only).

    The learned scores feed both the selection and the key bias; baselines select from their
    own scores and get no bias (they have nothing to learn).
    """
    out, aux = [], []
    for v, hidden in enumerate(grids):
        wf = window_mean(hidden.detach(), pool)
        learned = scorer(hidden) if scorer is not None else None
        if training and learned is not None:
            aux.append(temporal_aux_loss(learned, wf, cfg.aux_loss_weight))
        s = method_scores(cfg.method, learned=learned, window_features=wf, seed=cfg.seed + v,
                          ref_threshold=cfg.ref_threshold)
        sel = select_tokens(s, cfg.ratio, pool)
        bias = key_bias(learned, pool) if (learned is not None and cfg.ratio > 0) else None
        out.append(VideoSelection(sel, learned, bias))
    return out, (torch.stack(aux).mean() if aux else None)
