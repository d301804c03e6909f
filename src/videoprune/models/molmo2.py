"""Molmo2's family record, and the one rule for which ViT layers feed its LLM.

Molmo2 has no EVS adapter. Its STTS integration is :mod:`videoprune.models.stts_molmo2`, its
pooling layout :mod:`videoprune.models.molmo2_layout` and its preprocessing
:func:`videoprune.video.preprocess_molmo2` (fixed-size square frames; no prompt builder, so no
:class:`~videoprune.video.FamilySpec`).
"""

from __future__ import annotations

from typing import Any

import torch

from .family import TINY_HIDDEN, TINY_VOCAB, Family, OwnVideo, overlay

__all__ = ["FAMILY", "feature_taps", "tapped_depth", "geometry", "llm_tokens_per_frame", "synthetic_ids"]

#: Patches per LLM-token side (3x3 pooling: 81 tokens per 378 px frame of 14 px patches).
POOL = 3
#: Prompt tokens around each frame besides its patches: 3 of timestamp text, frame start, frame end.
FRAME_EXTRA_TOKENS = 5


def feature_taps(config) -> list[int]:
    """The ``hidden_states`` indices the adapter reads (``adapter_config.vision_feature_layer``), made non-negative.

    ``hidden_states[k]``: ``k = 0`` the embeddings, ``k >= 1`` the output of block ``k - 1``.
    """
    n_layers = int(config.vision_config.num_hidden_layers)
    return [t + 1 if t >= 0 else n_layers + 1 + t for t in config.adapter_config.vision_feature_layer]


def tapped_depth(config) -> int:
    """ViT blocks that can influence the LLM: up to the deepest feature tap (the blocks after it never matter)."""
    return max(feature_taps(config))


def geometry(config) -> dict[str, Any]:
    """:func:`videoprune.video.preprocess_molmo2`'s ``image_size`` and ``patch_size`` from ``config.vision_config``."""
    v = config.vision_config
    return {"image_size": tuple(v.image_size), "patch_size": int(v.patch_size)}


def llm_tokens_per_frame(config) -> int:
    """LLM prompt tokens of one frame: its pooled patch tokens plus timestamp text and frame marks."""
    v = config.vision_config
    size = v.image_size[0] if isinstance(v.image_size, (list, tuple)) else v.image_size
    side = int(size) // int(v.patch_size)
    return (-(-side // POOL)) ** 2 + FRAME_EXTRA_TOKENS


def synthetic_ids(model, video, prompt_tokens: int) -> dict[str, torch.Tensor]:
    """'<text> (<timestamp text> <frame_start> <im_patch>*81 <frame_end>)*T <text>', Molmo2's video layout."""
    c = model.config
    gen = torch.Generator().manual_seed(0)
    hi = c.get_text_config().vocab_size  # special ids live above the base vocabulary

    def text(n):
        return torch.randint(10, hi, (n,), generator=gen).tolist()

    head = prompt_tokens // 2
    ids = text(head)
    for _ in range(video.temporal_slices):
        ids += text(3) + [c.frame_start_token_id] + [c.image_patch_id] * video.tokens_per_frame + [c.frame_end_token_id]
    ids += text(prompt_tokens - head)
    ids = torch.tensor([ids])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "mm_token_type_ids": (ids == c.image_patch_id).long()}


#: Tiny Molmo2 geometry: 36 px frames of 6 px patches (6x6 patches), 3x3 pooling -> 2x2 LLM tokens per frame.
TINY_IMAGE, TINY_PATCH, TINY_POOL = 36, 6, 3
#: Tiny Molmo2 special ids (the additional vocabulary holds 8 more).
TINY_TOKEN_IDS = dict(image_start_token_id=102, low_res_image_start_token_id=104, image_end_token_id=103,
                      image_patch_id=101, frame_start_token_id=105, frame_end_token_id=106)


def tiny_config(vit_layers: int = 6, taps=(-1, -3), vocab_size: int = TINY_VOCAB, text: dict | None = None,
                vision: dict | None = None, token_ids: dict | None = None, **top: Any):
    """Tiny Molmo2: ``vit_layers``-block 32-wide ViT on 36 px frames, feature ``taps``, 2-layer 32-wide LLM.

    The default taps ``[-1, -3]`` read ``hidden_states`` 6 and 4: one inside the blocks STTS
    packs, one at the end.
    """
    import transformers as tf

    v = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=vit_layers, num_attention_heads=2,
             num_key_value_heads=2, head_dim=16, image_size=[TINY_IMAGE, TINY_IMAGE], patch_size=TINY_PATCH)
    adapter = dict(vision_feature_layer=list(taps), hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
                   head_dim=16, intermediate_size=64, text_hidden_size=TINY_HIDDEN)
    t = dict(hidden_size=TINY_HIDDEN, num_attention_heads=2, num_key_value_heads=1, head_dim=16, vocab_size=vocab_size,
             additional_vocab_size=8, num_hidden_layers=2, intermediate_size=64, max_position_embeddings=512)
    return tf.Molmo2Config(vision_config=overlay(v, vision), adapter_config=adapter, text_config=overlay(t, text),
                           **dict(TINY_TOKEN_IDS if token_ids is None else token_ids), **top)


FAMILY = Family.of(
    "Molmo2", tiny_config, model_types=("molmo2",),
    stts="videoprune.models.stts_molmo2:Molmo2STTS",
    tapped_depth=tapped_depth,
    own_video=OwnVideo("videoprune.video:preprocess_molmo2", geometry, llm_tokens_per_frame, synthetic_ids),
    full_size={
        # allenai/Molmo2-8B (SigLIP2 so400m ViT at 378 px / 14 px patches, 3x3 pooling -> 81 tokens per
        # frame, Qwen3-8B LLM). TRANSCRIBED from memory of the published config.json, not downloaded;
        # cross-checked against the Molmo2 config defaults of transformers 5.23 (which document this
        # checkpoint). The published file declares a 27-layer ViT read at vit_layers [-3, -9]; the
        # released weights stop at layer 24, so transformers trims the tower to 25 layers with taps
        # [24, 18] (the two last layers never run) -- written here in that trimmed form. The adapter's
        # MLP width (12288) and the rope theta (1e6, Qwen3's) are the least certain fields.
        "molmo2-8b": dict(
            model_type="molmo2", image_start_token_id=151936, image_end_token_id=151937, image_patch_id=151938,
            low_res_image_start_token_id=151940, frame_start_token_id=151943, frame_end_token_id=151944,
            text_config=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                             num_key_value_heads=8, head_dim=128, vocab_size=151936, additional_vocab_size=128,
                             qk_norm_type="qwen3", rms_norm_eps=1e-6, max_position_embeddings=36864,
                             tie_word_embeddings=False,
                             rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
            vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=25, num_attention_heads=16,
                               num_key_value_heads=16, head_dim=72, hidden_act="gelu_pytorch_tanh",
                               layer_norm_eps=1e-6, image_size=[378, 378], patch_size=14),
            adapter_config=dict(vision_feature_layer=[24, 18], hidden_size=1152, num_attention_heads=16,
                                num_key_value_heads=16, head_dim=72, intermediate_size=12288, text_hidden_size=4096,
                                hidden_act="silu"),
        ),
    },
)
