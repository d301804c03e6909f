"""prepare_inputs puts exactly as many video placeholders in the prompt as the model produces features."""

import numpy as np
import pytest
import torch

from videoprune.video import FAMILIES, clip_from_frames, prepare_inputs, preprocess, video_placeholder

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>", "<video>", "<image>"]
WORDS = ["user", "assistant", "system", "what", "happens", "?", "seconds", "<", ">", "."]
BUDGET = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 4}  # 56x56 frames: 4 patches/side -> 4 tokens per slice
QWEN3_BUDGET = {"min_pixels": 2 * 64 * 64, "max_pixels": 2 * 64 * 64}


def tiny_tokenizer():
    vocab = {w: i for i, w in enumerate(["[UNK]", *SPECIALS, *WORDS])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[UNK]")
    fast.add_special_tokens({"additional_special_tokens": SPECIALS})
    return fast


def frames(n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 64, 3), dtype=np.uint8)


def tid(tok, s):
    return tok.convert_tokens_to_ids(s)


def tiny_qwen2_vl(tok, qwen2_5=False):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
    ids = dict(video_token_id=tid(tok, "<|video_pad|>"), image_token_id=tid(tok, "<|image_pad|>"),
               vision_start_token_id=tid(tok, "<|vision_start|>"), vision_end_token_id=tid(tok, "<|vision_end|>"))
    if qwen2_5:
        vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, fullatt_block_indexes=[0], window_size=56)
        return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)).eval()
    vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2)
    return Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision, **ids)).eval()


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen2_placeholder_count_equals_video_features_and_forward_runs(family):
    """For Qwen2-VL and Qwen2.5-VL the prompt holds exactly as many video placeholders as the vision tower returns
    features, and the forward runs."""
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    model = tiny_qwen2_vl(tok, qwen2_5=family == "qwen2_5_vl")
    inputs = prepare_inputs(frames(4), "what happens ?", tok, family=family, **BUDGET)
    with torch.no_grad():
        feats = model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output
        out = model(**inputs)  # HF raises if placeholders and features disagree
    n_feats = sum(f.shape[0] for f in feats)
    assert int((inputs["input_ids"] == tid(tok, "<|video_pad|>")).sum()) == n_feats
    assert out.logits.shape[1] == inputs["input_ids"].shape[1]


def test_qwen3_prompt_has_one_timestamp_and_one_vision_block_per_slice():
    """A Qwen3-VL prompt has one timestamp and one vision block per temporal slice inside the outer vision pair,
    starting at the first slice's time."""
    tok = tiny_tokenizer()
    vt = preprocess(clip_from_frames(frames(4), fps=2.0), "qwen3_vl", **QWEN3_BUDGET)
    text = video_placeholder(vt)
    assert text.count("seconds>") == 2 and text.count("<|vision_start|>") == 3  # outer pair + one per slice
    assert text.startswith("<|vision_start|><0.2 seconds><|vision_start|>")


def test_qwen3_placeholder_count_equals_video_features_and_forward_runs():
    """For Qwen3-VL the prompt holds exactly as many video placeholders as the vision tower returns features, and the
    forward runs."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    cfg = Qwen3VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True}),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=16,
                           num_position_embeddings=64, deepstack_visual_indexes=[0]),
        video_token_id=tid(tok, "<|video_pad|>"), image_token_id=tid(tok, "<|image_pad|>"),
        vision_start_token_id=tid(tok, "<|vision_start|>"), vision_end_token_id=tid(tok, "<|vision_end|>"),
    )
    model = Qwen3VLForConditionalGeneration(cfg).eval()
    inputs = prepare_inputs(frames(4), "what happens ?", tok, family="qwen3_vl", fps=2.0, **QWEN3_BUDGET)
    with torch.no_grad():
        feats = model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output
        model(**inputs)
    assert int((inputs["input_ids"] == tid(tok, "<|video_pad|>")).sum()) == sum(f.shape[0] for f in feats)


def test_llava_onevision_placeholder_count_equals_video_features():
    """For LLaVA-OneVision the prompt holds as many video placeholders as the video features: patches per frame plus the
    newline token."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    cfg = LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=384, patch_size=14),
        video_token_id=tid(tok, "<video>"), image_token_id=tid(tok, "<image>"), vision_feature_layer=-1,
    )
    model = LlavaOnevisionForConditionalGeneration(cfg).eval()
    inputs = prepare_inputs(frames(2), "what happens ?", tok, family="llava_onevision")
    with torch.no_grad():
        feats = model.get_video_features(inputs["pixel_values_videos"], vision_feature_layer=-1,
                                         vision_feature_select_strategy="full").pooler_output
    assert int((inputs["input_ids"] == tid(tok, "<video>")).sum()) == feats.shape[1] == 2 * 14 * 14 + 1


def test_mm_token_type_ids_mark_exactly_the_video_tokens():
    """mm_token_type_ids is 2 on exactly the video placeholder tokens."""
    tok = tiny_tokenizer()
    inputs = prepare_inputs(frames(2), "what happens ?", tok, family="qwen2_vl", **BUDGET)
    assert torch.equal(inputs["mm_token_type_ids"] == 2, inputs["input_ids"] == tid(tok, "<|video_pad|>"))


def test_a_tokenizer_without_the_video_token_is_rejected():
    """A tokenizer lacking the family's video token is refused, naming the missing token."""
    from dataclasses import replace

    spec = replace(FAMILIES["qwen2_vl"], video_token="<|nope|>")
    with pytest.raises(ValueError, match="has no '<\\|nope\\|>' token"):
        prepare_inputs(frames(2), "what", tiny_tokenizer(), family=spec, **BUDGET)
