"""Tiny random video VLMs and matching synthetic inputs for the adapter tests (CPU, seconds)."""

from __future__ import annotations

import contextlib

import math

import torch

from videoprune.models import family_for
from videoprune.models.family import TINY_HIDDEN, TINY_IDS, TINY_PATCH, TINY_VOCAB, tiny_text

VOCAB = TINY_VOCAB
HIDDEN = TINY_HIDDEN
IMAGE_TOKEN = TINY_IDS["image_token_id"]
VIDEO_TOKEN = TINY_IDS["video_token_id"]
VISION_START = TINY_IDS["vision_start_token_id"]
VISION_END = TINY_IDS["vision_end_token_id"]
PAD_TOKEN = 0
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "llava_onevision")
QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")

# Qwen video: 12 frames -> 6 temporal slices; 8x8 patches -> 4x4 merged tokens per slice.
QWEN_PATCH = TINY_PATCH
QWEN_FRAMES = 12
QWEN_GRID_HW = 8
QWEN_IMAGE_GRID_HW = 4
# LLaVA-OneVision: 8x8 px frames, patch 2 -> 4x4 patches, pooled to 2x2 tokens per frame.
LLAVA_IMAGE_SIZE = 4 * TINY_PATCH
LLAVA_PATCH = TINY_PATCH
LLAVA_FRAMES = 6
LLAVA_IMAGE_CROPS = 2  # anyres: the base view + one 8x8 tile


def _text_config(**extra):
    """The tiny LLM config the builders use: the records' tiny text with an explicit 16-wide head."""
    return tiny_text(head_dim=16, **extra)


def _ids():
    return dict(TINY_IDS)


def build_model(family: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    """A randomly initialised ``*ForConditionalGeneration`` of ``family`` (its record's tiny config), eval mode."""
    model = family_for(family).tiny_model(seed, text=dict(head_dim=16))
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
                if family_for(family).spec.frame_timestamps_in_prompt:  # Qwen3-VL(-MoE)
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
