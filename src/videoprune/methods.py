"""The methods table: every pruning method by name, with its help text, the families it supports
and the one factory that turns ``(name, rate)`` into a patch config.

``ask``, ``bench speed``, ``bench accuracy``, ``train``, the lmms-eval plug-in and the vLLM
plug-in all read this table, so a method means the same thing everywhere and is validated in
one place. Which families a method supports is asked of the family's adapter (its declared
capabilities), never written here as a list of ``model_type`` names.

Example::

    >>> from videoprune.methods import get_method
    >>> get_method("evs-pre").config(rate=0.5)
    EVSConfig(rate=0.5, threshold=None, min_keep_fraction=0.0, max_keep_fraction=1.0, criterion='pixel', seed=0, apply_to_images=False, stage='pre_encoder')
    >>> get_method("none").config(rate=0.5) is None
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .validate import DEFAULT_RATE, check_budget, check_rate

__all__ = ["DEFAULT_RATE", "METHODS", "Method", "get_method", "method_choices", "method_names", "uniform_frames"]

#: where a method can be chosen; each command offers the methods whose ``where`` names it
PLACES = ("ask", "speed", "accuracy", "eval", "train", "vllm")


#: what each ``Method.needs`` asks of a family record (:class:`videoprune.models.family.Family`)
_NEEDS = {
    "": lambda f: f.adapter is not None or f.stts is not None,
    "evs": lambda f: f.adapter is not None,
    "pixel": lambda f: f.supports_pixel_criterion,
    "pre_encoder": lambda f: f.supports_pre_encoder,
    "stts": lambda f: f.stts is not None,
}


@dataclass(frozen=True)
class Method:
    """One pruning method.

    Attributes:
        name: what users type (``--method NAME``, ``{"method": NAME}``).
        help: one line for ``--help`` and the docs.
        kind: ``"none"`` (no pruning), ``"evs"`` (an :class:`~videoprune.EVSConfig`), ``"stts"``
            (an :class:`~videoprune.stts.STTSConfig`), ``"frames"`` (no patch: fewer frames
            decoded) or ``"checkpoint"`` (another checkpoint, not a way of running this one).
        evs: the :class:`~videoprune.EVSConfig` fields this method sets beside rate/threshold.
        needs: what the family must have: ``""`` (nothing: any family), ``"evs"`` (an EVS
            adapter), ``"pixel"`` (an adapter with ``supports_pixel_criterion``),
            ``"pre_encoder"`` (``supports_pre_encoder``) or ``"stts"`` (an STTS integration).
        threshold: ``"no"`` (rate only), ``"optional"`` (rate or threshold) or ``"required"``.
        where: the commands and plug-ins that offer it (see :data:`PLACES`).
    """

    name: str
    help: str
    kind: str
    evs: Mapping[str, Any] = field(default_factory=dict)
    needs: str = ""
    threshold: str = "no"
    where: tuple[str, ...] = PLACES

    def __post_init__(self):
        if self.needs not in _NEEDS:
            raise ValueError(f"needs must be one of {sorted(_NEEDS)}, got {self.needs!r}")
        object.__setattr__(self, "evs", MappingProxyType(dict(self.evs)))

    def supports(self, model_type: str) -> bool:
        """Whether this method runs on the family with ``config.model_type == model_type``."""
        return model_type in self.families()

    def families(self) -> tuple[str, ...]:
        """The ``model_type`` values this method runs on, in registry order, from the family records' capabilities."""
        from .models.registry import model_types_where

        return model_types_where(_NEEDS[self.needs])

    def check_family(self, model_type: str) -> None:
        """ValueError naming the supported families when this method cannot run on ``model_type``."""
        if not self.supports(model_type):
            raise ValueError(f"method {self.name!r} does not support model_type {model_type!r}; "
                             f"it supports: {', '.join(self.families())}")

    def config(self, rate: float | None = None, *, threshold: float | None = None, seed: int = 0,
               **stts: Any):
        """The patch config of this method: an EVSConfig, an STTSConfig, or None (nothing to patch).

        ``rate`` in [0, 1) is the fraction of video tokens dropped (:data:`DEFAULT_RATE` when
        None and no ``threshold``); ``threshold`` only for methods that take one; ``seed`` for
        the random baseline; ``stts`` are further :class:`~videoprune.stts.STTSConfig` fields
        (``prune_at``, ``scorer_path``, ...), refused for every other method.
        """
        rate, threshold = self.check_budget(rate, threshold)
        if stts and self.kind != "stts":
            raise ValueError(f"method {self.name!r} takes no STTS settings, got {sorted(stts)}")
        if self.kind == "evs":
            from .config import EVSConfig

            extra = dict(self.evs)
            if extra.get("criterion") == "random":
                extra["seed"] = seed
            return EVSConfig(rate=rate, threshold=threshold, **extra)
        if self.kind == "stts":
            from .stts.config import STTSConfig

            return STTSConfig(ratio=rate, **stts)
        return None

    def check_budget(self, rate: float | None, threshold: float | None, *,
                     default: float | None = DEFAULT_RATE) -> tuple[float | None, float | None]:
        """``(rate, threshold)`` validated for this method; rate ``default`` when neither is given.

        The method's own rule (a threshold only where it takes one, and where it needs one) is
        checked here; the budget itself by :func:`videoprune.validate.check_budget`. ``default=None``
        leaves the rate None for a caller that picks it later.
        """
        if threshold is not None and self.threshold == "no":
            raise ValueError(f"threshold applies to the EVS methods that take one "
                             f"({', '.join(method_names(threshold=True))}), not {self.name!r}")
        if threshold is None and self.threshold == "required":
            raise ValueError(f"method {self.name!r} needs a threshold")
        return check_budget(rate, threshold, default)

    def bundle_config(self, bundle, rate: float | None = None, *, threshold: float | None = None, seed: int = 0,
                      scorer: str = "default"):
        """:meth:`config` for a loaded model (a :class:`~videoprune.bundle.ModelBundle`).

        The one difference: ``stts`` takes the scorer ``scorer`` ('default' = the one shipped
        beside the model) with the settings it was trained with, which the bundle reads.
        """
        if self.kind == "stts":
            rate, _ = self.check_budget(rate, threshold)
            return bundle.stts_config(rate, scorer)
        return self.config(rate, threshold=threshold, seed=seed)

    def apply(self, model, rate: float | None = None, *, threshold: float | None = None, seed: int = 0, **stts: Any):
        """Switch this method on for ``model``: the :func:`videoprune.patch` handle, or None when nothing is patched."""
        cfg = self.config(rate, threshold=threshold, seed=seed, **stts)
        if cfg is None:
            return None
        from .patch import patch

        return patch(model, cfg)


def uniform_frames(num_frames: int | None, rate: float) -> int:
    """Frames the ``uniform`` baseline decodes: ``1 - rate`` of the temporal slices (2 frames each, >= 1)."""
    if not num_frames:
        raise ValueError("method 'uniform' needs a fixed frame count (the model samples by fps)")
    kept = round(1.0 - check_rate(rate), 12)  # 1 - (1 - f) is not always f in floats, and round() would see it
    return 2 * max(1, round(kept * (num_frames // 2)))


_ENGINES = ("ask", "speed", "accuracy", "eval", "vllm")
_ALL_EVAL = ("accuracy", "eval")

METHODS: Mapping[str, Method] = MappingProxyType({m.name: m for m in (
    Method("none", "unpatched model (the baseline; rate ignored)", "none",
           where=("ask", "speed", "accuracy", "eval")),
    Method("evs", "EVS on LLM-side embeddings, after the encoder (what serving engines ship)", "evs",
           needs="evs", threshold="optional", where=PLACES),
    Method("evs-pixel", "EVS with the pixel criterion, after the encoder", "evs",
           evs={"criterion": "pixel"}, needs="pixel", threshold="optional", where=("ask", "speed", *_ALL_EVAL)),
    Method("evs-pre", "EVS with the pixel criterion BEFORE the encoder, which encodes kept tokens only", "evs",
           evs={"criterion": "pixel", "stage": "pre_encoder"}, needs="pre_encoder", threshold="optional",
           where=_ENGINES),
    Method("evs-threshold", "EVS in threshold mode: keep tokens whose dissimilarity exceeds the threshold",
           "evs", needs="evs", threshold="required", where=_ALL_EVAL),
    Method("random", "random tokens at the same budget (a baseline; frame 0 still whole)", "evs",
           evs={"criterion": "random"}, needs="evs", where=("ask", *_ALL_EVAL)),
    Method("uniform", "fewer frames, uniformly sampled, at the same token budget (a baseline)", "frames",
           where=_ALL_EVAL),
    Method("stts", "STTS: a learned scorer prunes INSIDE the vision encoder; the LLM gets kept tokens only",
           "stts", needs="stts", where=PLACES),
    Method("uptrained", "the EVS-uptrained checkpoint, pruned with EVS (another checkpoint)", "checkpoint",
           needs="evs", where=("accuracy",)),
)})


def method_names(where: str | None = None, *, threshold: bool = False) -> tuple[str, ...]:
    """Names of the methods offered by ``where`` (all when None); only threshold-capable ones with ``threshold``."""
    if where is not None and where not in PLACES:
        raise ValueError(f"unknown place {where!r}; expected one of {PLACES}")
    return tuple(n for n, m in METHODS.items()
                 if (where is None or where in m.where) and (not threshold or m.threshold != "no"))


def method_choices(where: str) -> tuple[str, ...]:
    """The ``--method`` choices of ``where``: the methods that prune, in table order, then the baseline ``none``."""
    names = method_names(where)
    return tuple(n for n in names if METHODS[n].kind != "none") + tuple(n for n in names if METHODS[n].kind == "none")


def get_method(name: str, where: str | None = None) -> Method:
    """The method called ``name``; ValueError listing the choices (those ``where`` offers) when unknown."""
    names = method_names(where)
    if name not in names:
        place = f" for {where}" if where else ""
        raise ValueError(f"unknown method {name!r}{place}; expected one of: {', '.join(names)}")
    return METHODS[name]
