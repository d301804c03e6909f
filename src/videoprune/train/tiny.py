"""Built-in tiny random video VLMs (``--model tiny:<family>``) sized to the word tokenizer: tests and smoke runs.

Each is its family record's tiny config (:attr:`videoprune.models.Family.tiny_config`) at the
family's real patch geometry (14 px patches, 2x2 merge, temporal patch 2), so the inputs
:func:`videoprune.video.prepare_inputs` builds fit them exactly, with the record's
``train_tiny`` tower overrides (Qwen2.5-VL: three vision blocks, so that STTS can score after
block 0 or 1 and prune the rest: ``--stts-prune-at 0|1``); everything else is tiny (hidden width
32, two decoder layers). Random weights: they learn only what training teaches them.
"""

from __future__ import annotations


__all__ = ["tiny_model"]

#: The real Qwen patch size: prepare_inputs' frames fit the tiny models exactly.
PATCH_SIZE = 14


def tiny_model(name: str, tokenizer, seed: int = 0):
    """``name`` in ``TINY_MODELS`` -> a float32 ``*ForConditionalGeneration`` with ``vocab_size = len(tokenizer)``."""
    from ..models.registry import family_for
    from .config import TINY_MODELS

    if name not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(TINY_MODELS)}")
    family = family_for(name.split(":", 1)[1])
    ids = {k: tokenizer.convert_tokens_to_ids(t) for k, t in (
        ("video_token_id", "<|video_pad|>"), ("image_token_id", "<|image_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    model = family.tiny_model(seed, patch_size=PATCH_SIZE, vision=dict(family.train_tiny), vocab_size=len(tokenizer),
                              token_ids=ids, text=text)
    return model.float()
