"""The contract of an STTS family integration: :class:`STTSFamily`, what ``stts/hf.py`` and ``llm.py`` call on it.

Each family with STTS (``models/stts_<family>.py``) subclasses it; :func:`videoprune.stts.hf.patch_stts`
refuses a class that does not, and a subclass missing a member cannot be instantiated (``abc``), so
a new family learns what it must provide when it is built, not deep inside a forward.
Pure torch: nothing here imports transformers.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .config import STTSConfig
    from .hf import STTSHandle

__all__ = ["STTSFamily"]


class STTSFamily(abc.ABC):
    """One family's STTS wiring: built as ``cls(model, cfg)`` by ``patch_stts``, then asked for the members below.

    Besides the abstract members, ``__init__`` must set ``model`` (the model passed in) and
    ``inner`` (the module whose ``forward`` takes the multimodal inputs: the loss wrapper of
    :func:`videoprune.llm.install_loss` tells an inner-model patch from an outer one by it).
    """

    model: torch.nn.Module
    inner: torch.nn.Module

    @abc.abstractmethod
    def __init__(self, model: torch.nn.Module, cfg: STTSConfig) -> None:
        """Check that ``model`` is this family's and ``cfg`` fits it (ValueError, one line); set ``model``, ``inner``."""

    @property
    @abc.abstractmethod
    def position_axes(self) -> int:
        """3 for M-RoPE position ids ``(3, B, L)``, 1 for 1D ids ``(B, L)`` (read by the decode steps)."""

    @property
    @abc.abstractmethod
    def vision_width(self) -> int:
        """Channels of the ViT hidden states the scorer reads (the scorer's input width)."""

    @property
    @abc.abstractmethod
    def vision_device(self) -> torch.device:
        """Device of the vision tower (where the scorer is placed)."""

    @abc.abstractmethod
    def pool(self, cfg: STTSConfig) -> int:
        """Side of the patch window that becomes one LLM token (the scorer's pooling)."""

    @abc.abstractmethod
    def fingerprint_fields(self, cfg: STTSConfig) -> dict[str, Any]:
        """The config facts a saved scorer must match to be loaded into this model (JSON-able)."""

    @abc.abstractmethod
    def install(self, handle: STTSHandle) -> None:
        """Wrap the model's methods through ``handle.swap`` so that calls with video are pruned."""
