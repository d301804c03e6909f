"""The :class:`Family` record: everything videoprune knows about one model family, in one object.

Each ``models/<family>.py`` exports one record named ``FAMILY``; :mod:`videoprune.models.registry`
lists them and maps every ``config.model_type`` to its record. Every other module asks the
registry instead of naming a family (PEFT's one mapping keyed by ``model_type``).

The tiny-config helpers here are the shared parts of the families' tiny random configs (tests,
training smoke runs): a 32-wide, two-layer LLM and the special token ids the test inputs use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .base import ModelAdapter

__all__ = ["Family", "OwnVideo", "vision_tower_families", "TINY_VOCAB", "TINY_HIDDEN", "TINY_PATCH", "TINY_IDS", "tiny_text", "overlay", "last_block_depth"]

#: Vocabulary, width and patch size of the tiny random models (tests' inputs are built on them).
TINY_VOCAB = 128
TINY_HIDDEN = 32
TINY_PATCH = 2
#: Special token ids of the tiny Qwen / LLaVA models: image, video, vision start, vision end.
TINY_IDS = MappingProxyType(dict(image_token_id=100, video_token_id=101, vision_start_token_id=102,
                                 vision_end_token_id=103))
#: The M-RoPE sections of the tiny Qwen LLMs (head dim 16: 8 rotary pairs over t, h, w).
TINY_MROPE = MappingProxyType({"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0})


def tiny_text(vocab_size: int = TINY_VOCAB, **extra: Any) -> dict[str, Any]:
    """The tiny LLM's ``text_config`` dict (32 wide, 2 layers, 2 heads, 1 KV head); ``extra`` overrides."""
    cfg = dict(bos_token_id=None, eos_token_id=None, vocab_size=vocab_size, hidden_size=TINY_HIDDEN,
               intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
               max_position_embeddings=512, pad_token_id=0)
    cfg.update(extra)
    return cfg


def overlay(defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """A new dict: ``defaults`` with ``overrides`` (None: none) on top; how every tiny config takes its overrides."""
    return dict(defaults, **(overrides or {}))


def last_block_depth(config) -> int:
    """ViT blocks whose output reaches the LLM when only the last block's does: the tower's depth."""
    return int(config.vision_config.depth)


#: ``vision tower class name -> family name``, filled by every :class:`Family` record that names a
#: ``vision_tower`` as it is built. Modules below the registry (qwen_vision, vision_attention) read it
#: here instead of importing the registry, which imports them through the family adapters.
_VISION_TOWERS: dict[str, str] = {}


def vision_tower_families() -> dict[str, str]:
    """A copy of ``vision tower class name -> family name`` for every record built so far.

    Importing :mod:`videoprune.models` (which every module of it triggers) builds every record
    first, so by the time a function can ask, the table is complete.
    """
    return dict(_VISION_TOWERS)


def _import(target: str):
    """``"package.module:Name"`` -> the object (imported on first use: heavy modules stay unloaded)."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class OwnVideo:
    """How ``bench speed`` feeds a family with its own preprocessing and no :class:`~videoprune.video.FamilySpec`.

    Attributes:
        preprocess: ``"module:function"`` of the preprocessing, imported on use (the video
            package sits above the records), called as ``fn(clip, **geometry(config), device=...)``.
        geometry: ``geometry(config) -> dict``: the preprocessing's size keywords read from the config.
        llm_tokens_per_frame: ``llm_tokens_per_frame(config) -> int``: LLM prompt tokens per frame
            at the config's frame size, frame marks and timestamp text included (for estimates).
        synthetic_ids: ``synthetic_ids(model, video, prompt_tokens) -> dict``: ``input_ids``,
            ``attention_mask`` and ``mm_token_type_ids`` of a prompt around ``video``, without a tokenizer.
    """

    preprocess: str
    geometry: Callable[[Any], dict[str, Any]]
    llm_tokens_per_frame: Callable[[Any], int]
    synthetic_ids: Callable[..., dict[str, Any]]

    def preprocess_clip(self, clip, config, device=None):
        """``clip`` preprocessed for a model of ``config`` (``device``: None for the CPU path)."""
        return _import(self.preprocess)(clip, **self.geometry(config), device=device)


@dataclass(frozen=True)
class Family:
    """One model family: its ``model_type``s and every per-family piece videoprune uses.

    Attributes:
        name: the family's name (its main ``model_type``; ``bench``/``ask`` print it).
        model_types: the ``config.model_type`` values it serves.
        classes: transformers' ``(config class, *ForConditionalGeneration class)`` names,
            resolved lazily by :meth:`transformers_classes` (transformers stays unimported).
        tiny_config: ``tiny_config(**overrides) -> config``: the tiny random configuration the
            tests, ``train --model tiny:<family>`` and smoke runs build (see each family file).
        adapter: the EVS :class:`~videoprune.models.base.ModelAdapter` class, or None.
        stts: ``"module:Class"`` of the STTS integration (imported on use), or None.
        spec: the :class:`~videoprune.video.FamilySpec` that preprocessing and prompts use, or
            None for a family with its own preprocessing (Molmo2: ``preprocess_molmo2``).
        full_size: named full-size architectures (``bench speed --model NAME``), each a dict in
            the form of :data:`videoprune.bench.configs.ARCHITECTURES`.
        tapped_depth: ``tapped_depth(config) -> int``: how many ViT blocks can influence the
            LLM (the deepest block whose output is read, plus one).
        vision_tower: class name of the Qwen-style vision tower that
            :mod:`videoprune.models.qwen_vision` drives (pre-encoder EVS, fast attention), or None.
        train_tiny: vision-config overrides of the ``tiny:<family>`` training model, or None
            when the family offers none.
        own_video: the :class:`OwnVideo` hooks of a family whose preprocessing is its own (no
            ``spec``; Molmo2), or None.
    """

    name: str
    model_types: tuple[str, ...]
    classes: tuple[str, str]
    tiny_config: Callable[..., Any]
    adapter: type[ModelAdapter] | None = None
    stts: str | None = None
    spec: Any = None
    full_size: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tapped_depth: Callable[[Any], int] = last_block_depth
    vision_tower: str | None = None
    train_tiny: Mapping[str, Any] | None = None
    own_video: OwnVideo | None = None

    def __post_init__(self):
        if not self.model_types or self.name not in self.model_types:
            raise ValueError(f"family {self.name!r} must list its own name among model_types, got {self.model_types}")
        if self.adapter is not None and set(self.adapter.model_types) - set(self.model_types):
            raise ValueError(f"family {self.name!r}: adapter serves {self.adapter.model_types}, "
                             f"which are not all among {self.model_types}")
        if self.vision_tower is not None:
            _VISION_TOWERS[self.vision_tower] = self.name

    @classmethod
    def of(cls, prefix: str, tiny_config: Callable[..., Any], adapter: type[ModelAdapter] | None = None,
           model_types: tuple[str, ...] | None = None, **fields: Any) -> Family:
        """The record whose ``name``, ``model_types`` and ``classes`` follow from what already says them.

        ``model_types``: the adapter's (given only for a family without one); ``name``: the first
        of them; ``classes``: transformers' ``{prefix}Config`` and ``{prefix}ForConditionalGeneration``.
        ``fields``: the other attributes.
        """
        if adapter is None and model_types is None:
            raise ValueError(f"family {prefix!r} needs an adapter or model_types")
        types = tuple(adapter.model_types if model_types is None else model_types)
        return cls(name=types[0], model_types=types,
                   classes=(f"{prefix}Config", f"{prefix}ForConditionalGeneration"), tiny_config=tiny_config,
                   adapter=adapter, **fields)

    def transformers_classes(self) -> tuple[type, type]:
        """``(config class, model class)`` from transformers (imported now)."""
        return tuple(_import(f"transformers:{name}") for name in self.classes)

    def stts_class(self) -> type | None:
        """The STTS integration class (imported now), or None when the family has none."""
        return None if self.stts is None else _import(self.stts)

    def tiny_model(self, seed: int = 0, **overrides: Any):
        """A randomly initialised ``*ForConditionalGeneration`` of :attr:`tiny_config` (float32, train mode)."""
        import torch

        config = self.tiny_config(**overrides)
        torch.manual_seed(seed)
        return self.transformers_classes()[1](config)

    @property
    def supports_pixel_criterion(self) -> bool:
        """Whether EVS's ``criterion="pixel"`` works on this family."""
        return self.adapter is not None and self.adapter.supports_pixel_criterion

    @property
    def supports_pre_encoder(self) -> bool:
        """Whether EVS's ``stage="pre_encoder"`` works on this family."""
        return self.adapter is not None and self.adapter.supports_pre_encoder
