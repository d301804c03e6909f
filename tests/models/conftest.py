"""Shared fixtures for the adapter tests: tiny models (built once per family) and a reference."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))

import builders  # noqa: E402


@functools.lru_cache(maxsize=None)
def _cached_model(family: str, dtype: torch.dtype):
    return builders.build_model(family, dtype)


@pytest.fixture
def tiny():
    """``tiny(family, dtype=float32)`` -> a cached random model; tests must leave it unpatched."""

    def get(family, dtype=torch.float32):
        model = _cached_model(family, dtype)
        assert not hasattr(model, "_videoprune_handle"), "a previous test left the model patched"
        return model

    return get
