"""Built-in tiny random video VLMs (``--model tiny:<family>``) sized to the word tokenizer: tests and smoke runs.

They use the family's real patch geometry (14 px patches, 2x2 merge, temporal patch 2), so the
inputs :func:`videoprune.video.prepare_inputs` builds fit them exactly; everything else is tiny
(hidden width 32, two decoder layers; one vision block for Qwen2-VL, three for Qwen2.5-VL so that
STTS can score after block 0 or 1 and prune the rest: ``--stts-prune-at 0|1``). Random weights: they learn only what
training teaches them.
"""

from __future__ import annotations

import torch

__all__ = ["tiny_model"]


def tiny_model(name: str, tokenizer, seed: int = 0):
    """``name`` in ``TINY_MODELS`` -> a float32 ``*ForConditionalGeneration`` with ``vocab_size = len(tokenizer)``."""
    import transformers as tf

    from .config import TINY_MODELS

    if name not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(TINY_MODELS)}")
    family = name.split(":", 1)[1]
    ids = {k: tokenizer.convert_tokens_to_ids(t) for k, t in (
        ("video_token_id", "<|video_pad|>"), ("image_token_id", "<|image_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
    torch.manual_seed(seed)
    if family == "qwen2_vl":
        vision = dict(depth=1, embed_dim=32, hidden_size=32, mlp_ratio=2, num_heads=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        model = tf.Qwen2VLForConditionalGeneration(tf.Qwen2VLConfig(text_config=text, vision_config=vision, **ids))
    else:
        vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[0, 2])
        model = tf.Qwen2_5_VLForConditionalGeneration(tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                                                           **ids))
    return model.float()
