"""Model families: one record per family (:mod:`~videoprune.models.registry`), each with its EVS adapter.

``ADAPTERS`` and :func:`adapter_for` are derived from the registry; adding a family is a new
``models/<family>.py`` and one line in ``registry.FAMILY_MODULES`` (a static import, so the import
graph shows it).
"""

from __future__ import annotations

from .base import ModelAdapter, VideoLayout
from .family import Family
from .registry import DEFAULT_FAMILY, FAMILIES, FAMILIES_BY_TYPE, family_for, model_types_where

__all__ = ["ADAPTERS", "DEFAULT_FAMILY", "FAMILIES", "FAMILIES_BY_TYPE", "Family", "ModelAdapter", "VideoLayout",
           "adapter_for", "family_for", "model_types_where"]

#: ``model_type -> adapter class`` of every family that has an EVS adapter.
ADAPTERS: dict[str, type[ModelAdapter]] = {t: f.adapter for t, f in FAMILIES_BY_TYPE.items() if f.adapter is not None}


def adapter_for(model) -> ModelAdapter:
    """The adapter for ``model``; ValueError naming the supported families when there is none."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = ADAPTERS.get(model_type)
    if cls is None:
        raise ValueError(f"videoprune has no adapter for model_type {model_type!r} "
                         f"({type(model).__name__}); supported: {', '.join(sorted(ADAPTERS))}")
    return cls(model)
