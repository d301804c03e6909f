"""STTS on a tiny random Qwen2.5-VL: exactness at ratio 0, LLM counts, kept-unit encoder, gradients, generate, weights."""

from __future__ import annotations

import pytest
import torch

import builders as B
import stts_builders as SB
import videoprune
from vision_reference import _attention, _patch_rows_cols
from videoprune.stts import drop_count, prev_frame_scores, select_tokens, window_mean, windows_to_grid

PRUNE_AT, RATIO = SB.PRUNE_AT, SB.RATIO
FAMILY = "qwen2_5_vl"
ONE = [[("text", 3), ("video",), ("text", 4)]]
PADDED = [[("text", 3), ("video",), ("text", 4)], [("text", 7), ("video",), ("text", 2)]]
SLICES, UNITS = B.QWEN_FRAMES // 2, (B.QWEN_GRID_HW // 2) ** 2


@pytest.fixture(scope="module")
def model():
    return SB.build_qwen25()


@pytest.fixture
def patched(model):
    with SB.patcher(model) as make:
        yield make


cfg, logits = SB.stts_cfg, SB.logits


def test_ratio_zero_reproduces_unpatched_logits_exactly(model, patched):
    """ratio 0: bit-identical logits to the unpatched model (padded batch)."""
    inputs = B.make_inputs(FAMILY, PADDED)
    before = logits(model, inputs)
    patched(ratio=0.0)
    assert torch.equal(logits(model, inputs), before)


def test_llm_receives_text_plus_kept_count(model, patched):
    """ratio 0.5: the pruned rows hold text + (N - drop_count) video tokens per video."""
    inputs = B.make_inputs(FAMILY, PADDED)
    h = patched()
    out = logits(model, inputs)
    kept = SLICES * UNITS - drop_count(UNITS, SLICES, RATIO)
    text = ((inputs["input_ids"] != B.VIDEO_TOKEN) & inputs["attention_mask"].bool()).sum(1)
    assert [v.tokens_after for v in h.stats.videos] == [kept, kept]
    assert torch.equal(h._plan.attention_mask.sum(1), text + kept)
    assert out.shape[1] == int((text + kept).max())
    assert all(v.kept_per_frame[0] == UNITS for v in h.stats.videos)  # slice 0 kept whole


def _reference_encode(model, handle, inputs):
    """Slow reference: per slice, dense eager blocks 0..prune_at+1 (bias in the last), then kept units alone."""
    visual = model.model.visual
    m, unit = 2, 4
    full_blocks = set(SB.Q_FULLATT)
    ws = visual.window_size // m // visual.patch_size
    hu = wu = B.QWEN_GRID_HW // m
    rows, cols = _patch_rows_cols(hu, wu, m)
    pix = inputs["pixel_values_videos"]
    feats = []
    for v, sel in enumerate(handle.last_selection):
        bias = sel.bias  # (T, Hp, Wp) grid -> unit-major rows per slice
        for t in range(SLICES):
            base = (v * SLICES + t) * UNITS * unit
            x = visual.patch_embed(pix[base: base + UNITS * unit])
            pos = torch.stack([rows, cols], -1)
            b_t = bias[t][rows, cols]
            keep_units = sel.selection.keep_pooled[t].reshape(-1)
            keep_p = keep_units.repeat_interleave(unit)
            for bi, blk in enumerate(visual.blocks):
                if bi == PRUNE_AT + 2:
                    x, pos, b_t = x[keep_p], pos[keep_p], None
                    if x.shape[0] == 0:
                        break
                uh, uw = pos[:, 0] // m, pos[:, 1] // m
                win = (uh // ws) * 100 + (uw // ws)
                allowed = torch.ones(len(x), len(x), dtype=torch.bool) if bi in full_blocks else win[:, None] == win[None]
                cos, sin = visual.rotary_pos_emb(pos, pos)
                x = x + _attention(blk, blk.norm1(x), allowed, cos, sin, b_t if bi == PRUNE_AT + 1 else None)
                x = x + blk.mlp(blk.norm2(x))
            if x.shape[0]:
                feats.append(visual.merger(x))
    return torch.cat(feats)


def test_kept_unit_encoder_equals_each_slice_encoded_alone(model, patched):
    """STTS features of kept units equal a per-slice eager reference (dense to prune_at+1, kept units after)."""
    inputs = B.make_inputs(FAMILY, PADDED)
    h = patched()
    with torch.no_grad():
        out = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
        ref = _reference_encode(model, h, inputs)
    keep = h.encodes("stts").entries[-1][1]
    got = torch.cat(out.pooler_output)[keep]
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    assert torch.count_nonzero(torch.cat(out.pooler_output)[~keep]) == 0


def test_task_loss_and_aux_loss_each_reach_the_scorer(model, patched):
    """Training: task loss (via the key bias) and outputs.stts_aux_loss both give the scorer gradients."""
    inputs = B.make_inputs(FAMILY, ONE)
    labels = inputs["input_ids"].clone()
    labels[:, :-4] = -100
    h = patched()
    model.train()
    for part in ("task", "aux"):
        h.scorer.zero_grad(set_to_none=True)
        out = model(**inputs, labels=labels)
        (out.loss if part == "task" else out.stts_aux_loss).backward()
        grads = [p.grad for p in h.scorer.mlp.parameters()]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0, part


def test_generate_equals_explicit_greedy_decode(model, patched):
    """generate (greedy, cached) gives the tokens of a no-cache argmax loop over the patched model."""
    inputs = B.make_inputs(FAMILY, ONE)
    patched()
    steps = 4
    gen = model.generate(**inputs, max_new_tokens=steps, do_sample=False)[:, inputs["input_ids"].shape[1]:]
    ids, attn, mm = inputs["input_ids"], inputs["attention_mask"], inputs["mm_token_type_ids"]
    ref = []
    for _ in range(steps):
        with torch.no_grad():
            nxt = model(**dict(inputs, input_ids=ids, attention_mask=attn, mm_token_type_ids=mm),
                        use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ref.append(nxt)
        ids, attn = torch.cat([ids, nxt], 1), torch.cat([attn, torch.ones_like(nxt)], 1)
        mm = torch.cat([mm, torch.zeros_like(nxt)], 1)
    assert torch.equal(gen, torch.cat(ref, 1))


def test_save_load_identical_and_fingerprint_checked(model, patched, tmp_path):
    """save_scorer -> scorer_path reproduces logits exactly; another prune_at refuses the file."""
    inputs = B.make_inputs(FAMILY, ONE)
    h = patched()
    with torch.no_grad():
        for prm in h.scorer.parameters():
            prm.add_(torch.randn_like(prm) * 0.5)
    before = logits(model, inputs)
    path = str(tmp_path / "scorer.safetensors")
    h.save_scorer(path)
    h.remove()
    h2 = patched(scorer_path=path)
    assert torch.equal(logits(model, inputs), before)
    h2.remove()
    with pytest.raises(ValueError, match="fingerprint mismatch.*prune_at"):
        patched(prune_at=2, scorer_path=path)


def test_prev_frame_baseline_selects_from_layer_prune_at_windows(model, patched):
    """method='prev_frame_similarity' keeps what 1 - cos on the layer-prune_at windows says, same budget."""
    inputs = B.make_inputs(FAMILY, ONE)
    h = patched(method="prev_frame_similarity")
    logits(model, inputs)
    from videoprune.models import qwen_vision as QV

    visual = model.model.visual
    with torch.no_grad():
        lay = QV.unit_layout(visual, inputs["video_grid_thw"])
        x = QV.run_blocks(visual, QV.embed_patches(visual, inputs["pixel_values_videos"], lay), lay,
                          blocks=range(PRUNE_AT + 1))
    g = windows_to_grid(x, SLICES, B.QWEN_GRID_HW, B.QWEN_GRID_HW, 2)
    expect = select_tokens(prev_frame_scores(window_mean(g, 2)), RATIO, 2).keep_pooled
    assert torch.equal(h.last_selection[0].selection.keep_pooled, expect)
