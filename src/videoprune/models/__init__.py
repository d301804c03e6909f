"""Model adapters, one per family, chosen by ``config.model_type`` from :data:`ADAPTERS`."""

from __future__ import annotations

from .base import ModelAdapter, VideoLayout
from .llava_onevision import LlavaOnevisionAdapter
from .qwen2_5_vl import Qwen2_5_VLAdapter
from .qwen2_vl import Qwen2VLAdapter
from .qwen3_vl import Qwen3VLAdapter

__all__ = ["ADAPTERS", "ModelAdapter", "VideoLayout", "adapter_for"]

#: ``model_type -> adapter class``; adding a family means adding a file and one entry here.
ADAPTERS: dict[str, type[ModelAdapter]] = {
    t: cls
    for cls in (Qwen2VLAdapter, Qwen2_5_VLAdapter, Qwen3VLAdapter, LlavaOnevisionAdapter)
    for t in cls.model_types
}


def adapter_for(model) -> ModelAdapter:
    """The adapter for ``model``; ValueError naming the supported families when there is none."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = ADAPTERS.get(model_type)
    if cls is None:
        raise ValueError(f"videoprune has no adapter for model_type {model_type!r} "
                         f"({type(model).__name__}); supported: {', '.join(sorted(ADAPTERS))}")
    return cls(model)
