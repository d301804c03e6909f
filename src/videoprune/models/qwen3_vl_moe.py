"""Qwen3-VL-MoE: Qwen3-VL's vision tower, video layout and deepstack with a mixture-of-experts LLM.

Everything videoprune touches (placeholders, per-frame timestamp blocks, M-RoPE ids, deepstack
features, the vision tower) is laid out exactly as in Qwen3-VL, so the adapter is Qwen3-VL's;
only transformers' module of the encoder output class differs. The experts live inside the LLM
layers, which videoprune never changes: pruning shortens the sequence they route.
"""

from __future__ import annotations

from .family import Family
from .qwen3_vl import SPEC, TINY_MROPE_INTERLEAVED, Qwen3VLAdapter, qwen3_tiny_vision
from .qwen2_vl import qwen_tiny

__all__ = ["FAMILY", "Qwen3VLMoeAdapter"]


class Qwen3VLMoeAdapter(Qwen3VLAdapter):
    """Qwen3-VL-MoE (``Qwen3VLMoeForConditionalGeneration``): the Qwen3-VL adapter, its own output class."""

    model_types = ("qwen3_vl_moe",)
    deepstack_output_module = "transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe"


#: Tiny MoE LLM: 4 experts of width 32, 2 routed per token, every layer sparse.
TINY_MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)


#: Tiny Qwen3-VL-MoE: the tiny Qwen3-VL tower and LLM, with :data:`TINY_MOE` experts in every LLM layer.
tiny_config = qwen_tiny("Qwen3VLMoeConfig", qwen3_tiny_vision, text_defaults=TINY_MOE, rope=TINY_MROPE_INTERLEAVED)


FAMILY = Family.of(
    "Qwen3VLMoe", tiny_config, Qwen3VLMoeAdapter,
    spec=SPEC,  # Qwen3-VL's processor: same frames, budget and prompt
    vision_tower="Qwen3VLMoeVisionModel",
)
