"""A tiny random Qwen2.5-VL or Qwen2-VL checkpoint that both vLLM and transformers load, built offline.

The vLLM plug-in's equality tests and the serving benchmark's smoke run need a checkpoint that
vLLM's own loader, tokenizer and multimodal processor accept, with no hub download: a
transformers model saved with ``save_pretrained``, a byte-level BPE tokenizer carrying Qwen's
chat and vision special tokens, and the image/video processor configs as JSON files (written
directly, so building needs no torchvision).

Run it where transformers >= 5.23 is installed (the ``hf`` extra)::

    python -m videoprune.vllm.tiny_checkpoint OUT_DIR [--architecture Qwen2VLForConditionalGeneration]

Sizes: text width 64 with 2 heads of 32 (vLLM's CPU attention needs a head size >= 32), two
decoder layers; vision width 32 and Qwen's real patch geometry (14 px patches, 2x2 merge,
temporal patch 2). Qwen2.5-VL: three blocks with full attention in 0 and 2 (so STTS can score
after block 0, bias block 1 and prune block 2) and 56 px windows. Qwen2-VL: two blocks (its tower
attends per temporal slice in every block). The weights are random, seeded: greedy outputs are
reproducible but meaningless.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["ARCHITECTURES", "SPECIAL_TOKENS", "build_tiny_checkpoint"]

#: ``architecture (transformers and vLLM class) -> (config class, processor class, tiny vision tower)``; both
#: towers end in the text width (64)
ARCHITECTURES = {
    "Qwen2_5_VLForConditionalGeneration": ("Qwen2_5_VLConfig", "Qwen2_5_VLProcessor", dict(
        depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
        spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[0, 2],
        tokens_per_second=2)),
    "Qwen2VLForConditionalGeneration": ("Qwen2VLConfig", "Qwen2VLProcessor", dict(
        depth=2, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=14, spatial_merge_size=2,
        temporal_patch_size=2)),
}
_DEFAULT = "Qwen2_5_VLForConditionalGeneration"

#: Qwen2.5-VL's special tokens, one id each, after the byte-level BPE vocabulary
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")

_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = ("You are a helpful assistant. Describe the video. What happens in the clip? "
           "The ball moves left, then right; a car turns. 0123456789 seconds.")


def _tokenizer():
    """A ``PreTrainedTokenizerFast``: byte-level BPE (256 bytes + a few merges) and Qwen's special tokens."""
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    core = tokenizers.Tokenizer(tokenizers.models.BPE())
    core.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": [t for t in SPECIAL_TOKENS if t != "<|endoftext|>"]})
    tok.chat_template = _CHAT_TEMPLATE
    return tok


def _model(tok, seed: int, architecture: str):
    import torch
    import transformers as tf

    ids = {k: tok.convert_tokens_to_ids(t) for k, t in (
        ("video_token_id", "<|video_pad|>"), ("image_token_id", "<|image_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]})
    config_class, _, vision = ARCHITECTURES[architecture]
    torch.manual_seed(seed)
    cfg = getattr(tf, config_class)(text_config=text, vision_config=dict(vision), **ids)
    cfg.eos_token_id = tok.eos_token_id
    return getattr(tf, architecture)(cfg).float().eval()


def _processor_configs(out: Path, processor: str) -> None:
    """Image/video processor and processor configs as plain JSON (no torchvision needed to write them)."""
    common = {"do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "do_convert_rgb": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
              "image_std": [0.26862954, 0.26130258, 0.27577711], "patch_size": 14, "temporal_patch_size": 2,
              "merge_size": 2, "size": {"shortest_edge": 56 * 56, "longest_edge": 448 * 448}}
    (out / "preprocessor_config.json").write_text(json.dumps(
        {**common, "image_processor_type": "Qwen2VLImageProcessor", "processor_class": processor},
        indent=2))
    (out / "video_preprocessor_config.json").write_text(json.dumps(
        {**common, "video_processor_type": "Qwen2VLVideoProcessor", "processor_class": processor,
         "do_sample_frames": False, "min_frames": 4, "max_frames": 64, "fps": 2.0}, indent=2))


def build_tiny_checkpoint(out_dir: str | Path, seed: int = 0, architecture: str = _DEFAULT) -> Path:
    """Write the tiny checkpoint of ``architecture`` (a key of :data:`ARCHITECTURES`) to ``out_dir``.

    Config, safetensors weights, tokenizer, chat template and processor configs; the same
    tokenizer (and so the same token ids) for every architecture.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture: {architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer()
    _model(tok, seed, architecture).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    _processor_configs(out, ARCHITECTURES[architecture][1])
    (out / "chat_template.jinja").write_text(_CHAT_TEMPLATE)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny random Qwen2.5-VL or Qwen2-VL checkpoint (offline).")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default=_DEFAULT)
    args = parser.parse_args(argv)
    print(build_tiny_checkpoint(args.out_dir, args.seed, args.architecture))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
