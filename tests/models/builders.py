"""Tiny random video VLMs and matching synthetic inputs for the adapter tests (CPU, seconds)."""

from __future__ import annotations

import contextlib

import math

import torch

VOCAB = 128
HIDDEN = 32
IMAGE_TOKEN = 100
VIDEO_TOKEN = 101
VISION_START = 102
VISION_END = 103
PAD_TOKEN = 0
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision")
QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

# Qwen video: 12 frames -> 6 temporal slices; 8x8 patches -> 4x4 merged tokens per slice.
QWEN_PATCH = 2
QWEN_FRAMES = 12
QWEN_GRID_HW = 8
QWEN_IMAGE_GRID_HW = 4
# LLaVA-OneVision: 8x8 px frames, patch 2 -> 4x4 patches, pooled to 2x2 tokens per frame.
LLAVA_IMAGE_SIZE = 8
LLAVA_PATCH = 2
LLAVA_FRAMES = 6
LLAVA_IMAGE_CROPS = 2  # anyres: the base view + one 8x8 tile


def _text_config(**extra):
    cfg = dict(bos_token_id=None, eos_token_id=None,
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        pad_token_id=PAD_TOKEN, head_dim=16,
    )
    cfg.update(extra)
    return cfg


def _ids():
    return dict(image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN,
                vision_start_token_id=VISION_START, vision_end_token_id=VISION_END)


def build_model(family: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    """A randomly initialised ``*ForConditionalGeneration`` of ``family``, eval mode, eager-free."""
    import transformers as tf

    torch.manual_seed(seed)
    mrope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
    if family == "qwen2_vl":
        cfg = tf.Qwen2VLConfig(
            text_config=_text_config(rope_parameters=mrope),
            vision_config=dict(depth=1, embed_dim=32, hidden_size=HIDDEN, mlp_ratio=2, num_heads=2,
                               patch_size=QWEN_PATCH, spatial_merge_size=2, temporal_patch_size=2),
            **_ids(),
        )
        model = tf.Qwen2VLForConditionalGeneration(cfg)
    elif family == "qwen2_5_vl":
        cfg = tf.Qwen2_5_VLConfig(
            text_config=_text_config(rope_parameters=mrope),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=HIDDEN,
                               patch_size=QWEN_PATCH, spatial_merge_size=2, temporal_patch_size=2,
                               window_size=8, fullatt_block_indexes=[1]),
            **_ids(),
        )
        model = tf.Qwen2_5_VLForConditionalGeneration(cfg)
    elif family == "qwen3_vl":
        cfg = tf.Qwen3VLConfig(
            text_config=_text_config(rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                                      "mrope_interleaved": True, "rope_theta": 10000.0}),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=HIDDEN,
                               patch_size=QWEN_PATCH, spatial_merge_size=2, temporal_patch_size=2,
                               num_position_embeddings=64, deepstack_visual_indexes=[0]),
            **_ids(),
        )
        model = tf.Qwen3VLForConditionalGeneration(cfg)
    elif family == "llava_onevision":
        cfg = tf.LlavaOnevisionConfig(
            text_config=dict(model_type="qwen2", **_text_config()),
            vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2, image_size=LLAVA_IMAGE_SIZE,
                               patch_size=LLAVA_PATCH),
            image_token_index=IMAGE_TOKEN, video_token_index=VIDEO_TOKEN,
            vision_feature_layer=-1, vision_feature_select_strategy="full",
            image_grid_pinpoints=[[LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE]],
        )
        model = tf.LlavaOnevisionForConditionalGeneration(cfg)
    else:
        raise ValueError(family)
    return model.to(dtype).eval()


# ---------------------------------------------------------------------------------------------
# prompts: a prompt is a list of segments ("text", n) | ("video",) | ("video", t, h, w) | ("image",)
# (Qwen: ("video", t, h, w) is t temporal slices of h x w patches, h and w even)
# ---------------------------------------------------------------------------------------------
TIMESTAMP_LEN = 3  # Qwen3-VL: "<t.s seconds>" text before each temporal slice


def _video_pixels_qwen(gen: torch.Generator, t: int = QWEN_FRAMES // 2, h: int = QWEN_GRID_HW,
                       w: int = QWEN_GRID_HW) -> torch.Tensor:
    """A mostly static clip: each slice changes a random third of the patches of the previous one."""
    n_tok = h * w // 4
    row = 3 * 2 * QWEN_PATCH * QWEN_PATCH
    frames = [torch.randn(n_tok, 4, row, generator=gen)]
    for _ in range(1, t):
        nxt = frames[-1].clone()
        moved = torch.rand(n_tok, generator=gen) < 0.33
        nxt[moved] = torch.randn(int(moved.sum()), 4, row, generator=gen)
        frames.append(nxt)
    return torch.stack(frames).reshape(-1, row)


def make_inputs(family: str, prompts: list[list[tuple]], seed: int = 0, dtype=torch.float32,
                model=None) -> dict:
    """Left-padded batch for ``prompts`` with matching random pixels, as a processor would emit."""
    gen = torch.Generator().manual_seed(seed)
    rows, types = [], []
    pixel_videos, pixel_images, vgrids, igrids = [], [], [], []
    for segs in prompts:
        ids, tt = [], []
        for seg in segs:
            if seg[0] == "text":
                ids += torch.randint(4, 96, (seg[1],), generator=gen).tolist()
                tt += [0] * seg[1]
            elif seg[0] == "video" and family == "llava_onevision":
                s = math.ceil((LLAVA_IMAGE_SIZE // LLAVA_PATCH) / 2)
                n = LLAVA_FRAMES * s * s + 1
                ids += [VIDEO_TOKEN] * n
                tt += [2] * n
                base = torch.randn(1, 3, LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE, generator=gen)
                pixel_videos.append(base + 0.3 * torch.randn(LLAVA_FRAMES, 3, LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE,
                                                             generator=gen))
            elif seg[0] == "video":
                # ("video",) is the default clip; ("video", t, h, w) sets temporal slices and patch grid
                t, h, w = seg[1:] if len(seg) > 1 else (QWEN_FRAMES // 2, QWEN_GRID_HW, QWEN_GRID_HW)
                n = (h // 2) * (w // 2)  # LLM tokens per slice
                vgrids.append([t, h, w])
                pixel_videos.append(_video_pixels_qwen(gen, t, h, w))
                if family == "qwen3_vl":
                    for _ in range(t):
                        ids += torch.randint(4, 96, (TIMESTAMP_LEN,), generator=gen).tolist() + [VISION_START]
                        ids += [VIDEO_TOKEN] * n + [VISION_END]
                        tt += [0] * (TIMESTAMP_LEN + 1) + [2] * n + [0]
                else:
                    ids += [VISION_START] + [VIDEO_TOKEN] * t * n + [VISION_END]
                    tt += [0] + [2] * t * n + [0]
            elif seg[0] == "image" and family == "llava_onevision":
                n = _llava_image_tokens(model)
                ids += [IMAGE_TOKEN] * n
                tt += [1] * n
                pixel_images.append(torch.randn(LLAVA_IMAGE_CROPS, 3, LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE, generator=gen))
            elif seg[0] == "image":
                g = QWEN_IMAGE_GRID_HW
                igrids.append([1, g, g])
                ids += [VISION_START] + [IMAGE_TOKEN] * (g * g // 4) + [VISION_END]
                tt += [0] + [1] * (g * g // 4) + [0]
                pixel_images.append(torch.randn(g * g, 3 * 2 * QWEN_PATCH * QWEN_PATCH, generator=gen))
            else:
                raise ValueError(seg)
        rows.append(ids)
        types.append(tt)
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), PAD_TOKEN, dtype=torch.long)
    mm = torch.zeros_like(input_ids)
    attn = torch.zeros_like(input_ids)
    for i, (r, tt) in enumerate(zip(rows, types)):
        input_ids[i, length - len(r):] = torch.tensor(r)
        mm[i, length - len(r):] = torch.tensor(tt)
        attn[i, length - len(r):] = 1
    out = {"input_ids": input_ids, "attention_mask": attn}
    if family == "llava_onevision":
        if pixel_videos:
            out["pixel_values_videos"] = torch.stack(pixel_videos).to(dtype)
        if pixel_images:
            out["pixel_values"] = torch.stack(pixel_images).to(dtype)
            out["image_sizes"] = torch.tensor([[LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE]] * len(pixel_images))
    else:
        out["mm_token_type_ids"] = mm
        if pixel_videos:
            out["pixel_values_videos"] = torch.cat(pixel_videos).to(dtype)
            out["video_grid_thw"] = torch.tensor(vgrids)
        if pixel_images:
            out["pixel_values"] = torch.cat(pixel_images).to(dtype)
            out["image_grid_thw"] = torch.tensor(igrids)
    return out


def _llava_image_tokens(model) -> int:
    """Image placeholder count for one 8x8 image, asked from the model itself (anyres packing)."""
    x = torch.zeros(1, LLAVA_IMAGE_CROPS, 3, LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE, dtype=model.dtype)
    with torch.no_grad():
        feats = model.model.get_image_features(x, torch.tensor([[LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE]]),
                                               return_dict=True).pooler_output
    return int(sum(f.shape[0] for f in feats))


@contextlib.contextmanager
def patched(model, cfg):
    import videoprune

    handle = videoprune.patch(model, cfg)
    try:
        yield handle
    finally:
        handle.remove()
