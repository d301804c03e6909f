"""Tiny random Molmo2 / Qwen2.5-VL models and video inputs for the STTS integration tests."""

from __future__ import annotations

import contextlib

import torch

from videoprune.models.molmo2_layout import video_pooling

from videoprune.models import family_for
from videoprune.models import molmo2 as M2

VOCAB = 128
PATCH_TOKEN = M2.TINY_TOKEN_IDS["image_patch_id"]  # Molmo2 <im_patch>
FRAME_START, FRAME_END = M2.TINY_TOKEN_IDS["frame_start_token_id"], M2.TINY_TOKEN_IDS["frame_end_token_id"]
# Molmo2 frames: 36 px, 6 px patches -> 6x6 patches, 3x3 pooling -> 2x2 LLM tokens per frame.
M_IMAGE, M_PATCH, M_POOL = M2.TINY_IMAGE, M2.TINY_PATCH, M2.TINY_POOL
M_SIDE = M_IMAGE // M_PATCH
M_TOKENS = (M_SIDE // M_POOL) ** 2
M_FRAMES = 6
M_VIT_LAYERS = 6
M_TAPS = [-1, -3]  # hidden_states 6 and 4: one tap inside the packed blocks, one at the end


def build_molmo2(seed: int = 0, vit_layers: int = M_VIT_LAYERS, taps=None):
    """The record's tiny Molmo2 with ``vit_layers`` ViT blocks and feature ``taps``, eval mode."""
    return family_for("molmo2").tiny_model(seed, vit_layers=vit_layers, taps=list(taps or M_TAPS)).eval()


def molmo2_video(gen: torch.Generator, frames: int = M_FRAMES) -> torch.Tensor:
    """A mostly static clip: each frame re-draws a random third of the previous frame's patches."""
    p, row = M_SIDE * M_SIDE, M_PATCH * M_PATCH * 3
    out = [torch.randn(p, row, generator=gen)]
    for _ in range(1, frames):
        nxt = out[-1].clone()
        moved = torch.rand(p, generator=gen) < 0.33
        nxt[moved] = torch.randn(int(moved.sum()), row, generator=gen)
        out.append(nxt)
    return torch.stack(out)


def molmo2_inputs(texts: list[tuple[int, int]], seed: int = 0, frames: int = M_FRAMES) -> dict:
    """Left-padded batch, one video per row: ``texts[b] = (text before, text after)`` token counts.

    Per frame: 2 timestamp tokens, <frame_start>, M_TOKENS <im_patch>, <frame_end> (as the processor lays it out).
    """
    gen = torch.Generator().manual_seed(seed)
    rows, pix, grids = [], [], []
    for before, after in texts:
        ids = torch.randint(4, 96, (before,), generator=gen).tolist()
        for _ in range(frames):
            ids += torch.randint(4, 96, (2,), generator=gen).tolist() + [FRAME_START] + [PATCH_TOKEN] * M_TOKENS + [FRAME_END]
        ids += torch.randint(4, 96, (after,), generator=gen).tolist()
        rows.append(ids)
        pix.append(molmo2_video(gen, frames))
        grids.append([frames, M_SIDE // M_POOL, M_SIDE // M_POOL])
    length = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    attn = torch.zeros_like(input_ids)
    for i, r in enumerate(rows):
        input_ids[i, length - len(r):] = torch.tensor(r)
        attn[i, length - len(r):] = 1
    return {"input_ids": input_ids, "attention_mask": attn, "mm_token_type_ids": (input_ids == PATCH_TOKEN).long(),
            "pixel_values_videos": torch.cat(pix), "video_token_pooling": video_pooling([frames] * len(texts), M_SIDE, M_SIDE, M_POOL),
            "video_grids": torch.tensor(grids)}


# Qwen2.5-VL: builders.make_inputs("qwen2_5_vl", ...) videos (6 slices of 4x4 merge units) on a
# 5-block encoder: windows of 2x2 units in blocks 0, 2, 3; full attention in 1 and 4.
Q_DEPTH = 5
Q_FULLATT = [1, 4]


def build_qwen25(seed: int = 0):
    """The record's tiny Qwen2.5-VL with a Q_DEPTH-block tower (full attention in Q_FULLATT), eval mode."""
    vision = dict(depth=Q_DEPTH, fullatt_block_indexes=Q_FULLATT)
    return family_for("qwen2_5_vl").tiny_model(seed, vision=vision, text=dict(head_dim=16)).eval()


# ---- shared by the STTS model tests ---------------------------------------------------------
PRUNE_AT = 1
RATIO = 0.5


def stts_cfg(**kw):
    """A small STTSConfig for tiny models: ratio 0.5, prune after block 1, small scorer."""
    import videoprune

    base = dict(ratio=RATIO, prune_at=PRUNE_AT, mlp_hidden=16, attn_dim=8)
    base.update(kw)
    return videoprune.STTSConfig(**base)


@contextlib.contextmanager
def patcher(model):
    """Yield ``make(**cfg_overrides) -> handle``; every handle still installed is removed afterwards."""
    import videoprune

    handles = []

    def make(**kw):
        h = videoprune.patch(model, stts_cfg(**kw))
        handles.append(h)
        return h

    try:
        yield make
    finally:
        for h in handles:
            if getattr(model, "_videoprune_handle", None) is h:
                h.remove()
        model.eval()


def logits(model, inputs, **kw):
    with torch.no_grad():
        return model(**inputs, **kw).logits
