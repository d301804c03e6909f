"""Qwen2.5-VL adapter: same token layout as Qwen2-VL (absolute-time M-RoPE is the model's own business)."""

from __future__ import annotations

from dataclasses import replace

from .family import TINY_HIDDEN, Family
from .qwen2_vl import QWEN_IDS, Qwen2VLAdapter, qwen_tiny
from .qwen2_vl import SPEC as QWEN2_SPEC

__all__ = ["FAMILY", "Qwen2_5_VLAdapter"]


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL: temporal ids scaled by ``second_per_grid_ts`` come from its own get_rope_index."""

    model_types = ("qwen2_5_vl",)


# --------------------------------------------------------------------------------------------
# the family record
# --------------------------------------------------------------------------------------------
SPEC = replace(QWEN2_SPEC, name="qwen2_5_vl", model_types=("qwen2_5_vl",), second_per_grid_ts=True)


def tiny_tower(patch_size: int) -> dict:
    """The tiny Qwen2.5-VL tower: two 32-wide blocks (block 0 windowed over 2x2 merge units, block 1 full)."""
    return dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=TINY_HIDDEN,
                patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2, window_size=4 * patch_size,
                fullatt_block_indexes=[1])


#: Tiny Qwen2.5-VL: :func:`tiny_tower` (``vision`` overrides), the tiny M-RoPE LLM.
tiny_config = qwen_tiny("Qwen2_5_VLConfig", tiny_tower)


def _text(hidden: int, inter: int, layers: int, heads: int, vocab: int, tie: bool) -> dict:
    """A published Qwen2.5-VL ``text_config`` (4 or 2 KV heads, 128k positions, M-RoPE 16/24/24)."""
    return dict(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=2 if hidden < 3000 else 4, vocab_size=vocab, rms_norm_eps=1e-6,
                max_position_embeddings=128000, tie_word_embeddings=tie,
                rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=[16, 24, 24]))


def _vision(out_hidden: int) -> dict:
    """The Qwen2.5-VL ViT (32 blocks of 1280, windows of 112 px, full attention every 8th block)."""
    return dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=out_hidden,
                patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu", in_channels=3)


FAMILY = Family.of(
    "Qwen2_5_VL", tiny_config, Qwen2_5_VLAdapter,
    stts="videoprune.models.stts_qwen2_5_vl:Qwen2_5_VLSTTS",
    spec=SPEC,
    vision_tower="Qwen2_5_VisionTransformerPretrainedModel",
    # the training smoke model: three blocks, so STTS can score after block 0 or 1 and prune the rest
    train_tiny=dict(depth=3, fullatt_block_indexes=[0, 2]),
    full_size={
        # Qwen/Qwen2.5-VL-3B-Instruct
        "qwen2.5-vl-3b": dict(model_type="qwen2_5_vl", **QWEN_IDS, text_config=_text(2048, 11008, 36, 16, 151936, True),
                              vision_config=_vision(2048)),
        # Qwen/Qwen2.5-VL-7B-Instruct
        "qwen2.5-vl-7b": dict(model_type="qwen2_5_vl", **QWEN_IDS,
                              text_config=_text(3584, 18944, 28, 28, 152064, False), vision_config=_vision(3584)),
    },
)
