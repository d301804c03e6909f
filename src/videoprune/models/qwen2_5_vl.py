"""Qwen2.5-VL adapter: same token layout as Qwen2-VL (absolute-time M-RoPE is the model's own business)."""

from __future__ import annotations

from .qwen2_vl import Qwen2VLAdapter

__all__ = ["Qwen2_5_VLAdapter"]


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL: temporal ids scaled by ``second_per_grid_ts`` come from its own get_rope_index."""

    model_types = ("qwen2_5_vl",)
