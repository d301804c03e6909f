"""The small Qwen2.5-VL-architecture model for the synthetic video-QA (the embedded default's recipe).

A real transformers architecture (``Qwen2_5_VLForConditionalGeneration``: windowed ViT with
14 px patches, 2x2 merge, temporal patch 2, M-RoPE LLM), scaled down so it trains on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["SIZES", "FRAME_SIZE", "NUM_FRAMES", "FPS", "build_qa_model", "save_bundle"]

FRAME_SIZE = 112  # 8x8 patches of 14 px -> 4x4 = 16 LLM tokens per temporal slice
NUM_FRAMES = 16  # 8 temporal slices -> 128 video tokens
FPS = 8.0
# Temporal M-RoPE step per second of video: 2 s of 8 fps frames per temporal patch of 2 frames
# = 0.25 s per slice -> 2 position ids per slice (real Qwen2.5-VL at its 2 fps sampling also
# advances 2 ids per slice). The stock value (2) would give 0.5 per slice, and adjacent slices
# would share a temporal position after rounding down.
TOKENS_PER_SECOND = 8
# Weight init std. The stock 0.02 leaves a 128-wide model's attention logits ~0 and training
# sits on the answer prior for hundreds of steps; ~1/sqrt(width) gets it going.
INIT_STD = 0.08

# (vision depth, vision width, LLM layers, LLM width)
SIZES = {"default": (2, 96, 3, 128), "tiny": (2, 32, 1, 32)}


def build_qa_model(tokenizer, size: str = "default", seed: int = 0):
    """A randomly initialised ``Qwen2_5_VLForConditionalGeneration`` sized by ``SIZES[size]``."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    v_depth, v_width, layers, width = SIZES[size]
    heads = 4 if width >= 64 else 2
    half = width // heads // 2  # rotary half-dim, split over the (t, h, w) axes
    hw = half * 3 // 8
    tid = tokenizer.convert_tokens_to_ids
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=width, intermediate_size=3 * width, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=1024,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [half - 2 * hw, hw, hw]},
            tie_word_embeddings=True, bos_token_id=None, eos_token_id=tid("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id, initializer_range=INIT_STD,
        ),
        vision_config=dict(
            depth=v_depth, hidden_size=v_width, intermediate_size=2 * v_width, num_heads=4 if v_width >= 64 else 2,
            out_hidden_size=width, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
            window_size=FRAME_SIZE, fullatt_block_indexes=[v_depth - 1], tokens_per_second=TOKENS_PER_SECOND,
            initializer_range=INIT_STD,
        ),
        video_token_id=tid("<|video_pad|>"), image_token_id=tid("<|image_pad|>"),
        vision_start_token_id=tid("<|vision_start|>"), vision_end_token_id=tid("<|vision_end|>"),
        tie_word_embeddings=True, initializer_range=INIT_STD,
    )
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(cfg)


def save_bundle(model, tokenizer, path, **spec) -> Path:
    """Save model (safetensors) + tokenizer + ``videoprune.json`` so ``load_bundle(path)`` restores it."""
    from ..bundle import SPEC_FILE

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    full = {"family": model.config.model_type, "num_frames": NUM_FRAMES, "fps": FPS, "frame_size": FRAME_SIZE,
            "min_pixels": FRAME_SIZE * FRAME_SIZE, "max_pixels": FRAME_SIZE * FRAME_SIZE, "system": None}
    full.update(spec)
    (out / SPEC_FILE).write_text(json.dumps(full, indent=2) + "\n")
    return out
