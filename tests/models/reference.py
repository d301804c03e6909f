"""Slow, obviously-correct EVS reference: gather kept tokens by hand and call the language model.

It captures the UNPATCHED model's own language-model inputs (full embeddings and position ids),
selects with core.evs.retention_mask, and builds the pruned batch with plain Python loops.
With ``pre_encoder=True`` (Qwen) it selects with core.evs.pixel_retention_mask instead and puts
the per-slice kept-unit encoding of vision_reference (main and deepstack features) at the video
positions before gathering: what stage="pre_encoder" must feed the language model.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

import builders as B
from videoprune.core.evs import pixel_retention_mask, retention_mask
from vision_reference import reference_encode_deepstack


def capture_lm_inputs(model, inputs: dict) -> dict:
    """The kwargs the unpatched model passes to its language model for ``inputs``."""
    seen = {}

    def hook(module, args, kwargs):
        seen.update(kwargs)

    h = model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        h.remove()
    return seen


def video_grids(family: str, inputs: dict) -> tuple[list, int, bool]:
    """(pre-merge grids, spatial merge, has trailing newline per video) of the inputs' videos."""
    if family == "llava_onevision":
        v, f = inputs["pixel_values_videos"].shape[:2]
        s = (B.LLAVA_IMAGE_SIZE // B.LLAVA_PATCH + 1) // 2
        return [(f, s, s)] * v, 1, True
    return [tuple(g) for g in inputs["video_grid_thw"].tolist()], 2, False


def reference_keep(family: str, inputs: dict, embeds: torch.Tensor, rate: float) -> torch.Tensor:
    """(B, L) bool: tokens the reference keeps (all real non-video tokens + selected video tokens)."""
    ids, attn = inputs["input_ids"], inputs["attention_mask"].bool()
    vmask = ids == B.VIDEO_TOKEN
    feats = embeds[vmask]
    grids, merge, newline = video_grids(family, inputs)
    keep_video, start = [], 0
    for g in grids:
        n = g[0] * (g[1] // merge) * (g[2] // merge)
        keep_video.append(retention_mask(feats[start : start + n], g, merge, rate))
        start += n
        if newline:
            keep_video.append(torch.ones(1, dtype=torch.bool))
            start += 1
    keep = attn.clone()
    keep[vmask] = torch.cat(keep_video)
    return keep


def _pre_encoder_video(model, inputs: dict, cap: dict, rate: float):
    """Pixel selection and per-slice kept-unit features put in place: (keep (B, L), embeds, deepstack)."""
    ids, attn = inputs["input_ids"], inputs["attention_mask"].bool()
    px, grid = inputs["pixel_values_videos"], inputs["video_grid_thw"]
    keep_video = pixel_retention_mask(px, grid, model.config.vision_config.spatial_merge_size, rate=rate)
    with torch.no_grad():
        feats, deep = reference_encode_deepstack(model.model.visual, px, grid.tolist(), keep_video)
    vmask = ids == B.VIDEO_TOKEN
    emb = cap["inputs_embeds"].clone()
    rows = emb[vmask]
    rows[keep_video] = feats  # pruned rows keep the full encoder's features; they are dropped below
    emb[vmask] = rows
    deepstack = None
    if cap.get("deepstack_visual_embeds") is not None:
        video_rows = vmask[cap["visual_pos_masks"]]  # which deepstack rows are video tokens
        deepstack = []
        for d, kept in zip(cap["deepstack_visual_embeds"], deep):
            d = d.clone()
            v = d[video_rows]
            v[keep_video] = kept
            d[video_rows] = v
            deepstack.append(d)
    keep = attn.clone()
    keep[vmask] = keep_video
    return keep, emb, deepstack


def reference_prefill(family, model, inputs, rate, positions=None, pre_encoder=False):
    """Pruned LM inputs built by hand: (embeds, positions, mask, extra kwargs, kept full indices)."""
    cap = capture_lm_inputs(model, inputs)
    emb = cap["inputs_embeds"]
    b, length = emb.shape[:2]
    pos = cap.get("position_ids") if positions is None else positions
    if pos is None:
        pos = torch.arange(length).expand(b, length)
    if pre_encoder:
        keep, emb, deepstack = _pre_encoder_video(model, inputs, cap, rate)
        if deepstack is not None:
            cap["deepstack_visual_embeds"] = deepstack
    else:
        keep = reference_keep(family, inputs, emb, rate)
    rows = [torch.nonzero(keep[i]).flatten() for i in range(b)]
    new_len = max(len(r) for r in rows)
    e = torch.zeros(b, new_len, emb.shape[-1], dtype=emb.dtype)
    p = torch.ones(*pos.shape[:-2], b, new_len, dtype=torch.long)
    m = torch.zeros(b, new_len, dtype=torch.long)
    for i, r in enumerate(rows):
        off = new_len - len(r)
        e[i, off:] = emb[i, r]
        p[..., i, off:] = pos[..., i, r]
        m[i, off:] = 1
    extra = {}
    if cap.get("visual_pos_masks") is not None:  # Qwen3-VL deepstack
        vis = cap["visual_pos_masks"]
        vis_keep = keep[vis]
        new_vis = torch.zeros(b, new_len, dtype=torch.bool)
        for i, r in enumerate(rows):
            new_vis[i, new_len - len(r):] = vis[i, r]
        extra = {"visual_pos_masks": new_vis,
                 "deepstack_visual_embeds": [d[vis_keep] for d in cap["deepstack_visual_embeds"]]}
    return e, p, m, extra, rows


def reference_logits(family, model, inputs, rate, pre_encoder=False):
    e, p, m, extra, _ = reference_prefill(family, model, inputs, rate, pre_encoder=pre_encoder)
    with torch.no_grad():
        out = model.model.language_model(inputs_embeds=e, position_ids=p, attention_mask=m, **extra)
        return model.lm_head(out.last_hidden_state)


def reference_greedy(family, model, inputs, rate, steps, pre_encoder=False):
    """Greedy decode with a KV cache over the hand-pruned prompt; positions continue unpruned."""
    attn = inputs["attention_mask"]
    positions = None
    if family == "llava_onevision":  # what generate passes: cumulative ids over real tokens
        positions = (attn.cumsum(-1) - 1).masked_fill(attn == 0, 0)
    e, p, m, extra, _ = reference_prefill(family, model, inputs, rate, positions, pre_encoder=pre_encoder)
    lm = model.model.language_model
    cache = DynamicCache(config=model.config.get_text_config())
    real = m.bool()
    nxt = p.masked_fill(~real, -1).amax(dim=(0, 2) if p.dim() == 3 else 1) + 1  # (B,)
    tokens = []
    with torch.no_grad():
        out = lm(inputs_embeds=e, position_ids=p, attention_mask=m, past_key_values=cache, use_cache=True, **extra)
        for s in range(steps):
            tok = model.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
            tokens.append(tok)
            m = torch.cat([m, torch.ones(m.shape[0], 1, dtype=m.dtype)], dim=1)
            step_pos = (nxt + s).unsqueeze(1)
            if p.dim() == 3:
                step_pos = step_pos.unsqueeze(0).expand(3, -1, -1)
            out = lm(inputs_embeds=lm.embed_tokens(tok).unsqueeze(1), position_ids=step_pos, attention_mask=m,
                     past_key_values=cache, use_cache=True)
    return torch.stack(tokens, dim=1)
