"""STTS on a tiny random Molmo2: exactness at ratio 0, LLM token counts, packing, gradients, generate, weights."""

from __future__ import annotations

import pytest
import torch

import stts_builders as SB
import videoprune
from videoprune.models.molmo2_layout import to_global
from videoprune.stts import drop_count, prev_frame_scores, ref_frame_scores, select_tokens, window_mean

PRUNE_AT, RATIO = SB.PRUNE_AT, SB.RATIO
ONE = [(3, 4)]
PADDED = [(3, 4), (7, 1)]


@pytest.fixture(scope="module")
def model():
    return SB.build_molmo2()


@pytest.fixture
def patched(model):
    with SB.patcher(model) as make:
        yield make


cfg, logits = SB.stts_cfg, SB.logits


class LLMInput:
    """What the Molmo2 language model receives (inputs_embeds, position_ids, attention mask)."""

    def __init__(self, model):
        self.seen = {}
        self._h = model.model.language_model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.seen = dict(kwargs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._h.remove()


def test_ratio_zero_reproduces_unpatched_logits_exactly(model, patched):
    """ratio 0: bit-identical logits to the unpatched model (padded batch of two videos)."""
    inputs = SB.molmo2_inputs(PADDED)
    before = logits(model, inputs)
    patched(ratio=0.0)
    assert torch.equal(logits(model, inputs), before)


def test_llm_receives_text_plus_kept_count_at_original_positions(model, patched):
    """ratio 0.5: each row's LLM input is its text + (N - drop_count) video tokens, at their unpruned positions."""
    inputs = SB.molmo2_inputs(PADDED)
    ids, attn = inputs["input_ids"], inputs["attention_mask"]
    h = patched()
    with LLMInput(model) as rec:
        logits(model, inputs)
    n_video = SB.M_FRAMES * SB.M_TOKENS
    kept = n_video - drop_count(SB.M_TOKENS, SB.M_FRAMES, RATIO)
    text = ((ids != SB.PATCH_TOKEN) & attn.bool()).sum(1)
    expected = text + kept
    assert [v.tokens_after for v in h.stats.videos] == [kept, kept]
    assert rec.seen["inputs_embeds"].shape[1] == int(expected.max())
    # positions: the kept tokens' unpruned ids (model default = arange over the padded row)
    full = torch.arange(ids.shape[1]).expand_as(ids)
    plan = h._plan
    pos = rec.seen["position_ids"]
    for b in range(ids.shape[0]):
        real = plan.attention_mask[b].bool()
        assert int(real.sum()) == int(expected[b])
        assert torch.equal(pos[b][real], full[b][plan.index[b][real]])
        # every text token of the row is there, in order, at its unpruned position
        is_text = ids[b][plan.index[b][real]] != SB.PATCH_TOKEN
        assert torch.equal(pos[b][real][is_text], full[b][(ids[b] != SB.PATCH_TOKEN) & attn[b].bool()])


def _reference_encode(model, handle, inputs):
    """Slow reference: blocks after prune_at+1 run on each frame's kept patches ALONE (no packing)."""
    inner, c = model.model, handle.config
    vt = inner.vision_tower
    p = SB.M_SIDE * SB.M_SIDE
    x = vt.patch_embedding(inputs["pixel_values_videos"]) + vt.positional_embedding[None]
    for i in range(c.prune_at + 1):
        x = vt.layers[i](x, None)
    sels = handle.last_selection
    bias = torch.cat([s.bias for s in sels]).reshape(-1, 1, 1, p)
    x = vt.layers[c.prune_at + 1](x, bias)
    taps = {c.prune_at + 2: x}
    keep = torch.cat([s.selection.keep_patches.reshape(-1, p) for s in sels])
    depth = SB.M_VIT_LAYERS
    outs = {k: torch.zeros_like(x) for k in range(c.prune_at + 3, depth + 1)}
    for f in range(x.shape[0]):
        if not keep[f].any():
            continue
        y = x[f][keep[f]].unsqueeze(0)
        for j in range(c.prune_at + 2, depth):
            y = vt.layers[j](y, None)
            outs[j + 1][f][keep[f]] = y[0]
    taps.update(outs)
    feats = torch.cat([taps[depth + 1 + t] for t in SB.M_TAPS], -1)
    kept_tokens = torch.cat([s.keep_flat for s in sels])
    frames = inputs["video_grids"][:, 0].tolist()
    pooling = to_global(inputs["video_token_pooling"], [t * SB.M_TOKENS for t in frames], [t * p for t in frames])
    return inner.multi_modal_projector(feats, pooling[kept_tokens]).last_hidden_state


def test_packed_rows_equal_each_frame_kept_tokens_alone(model, patched):
    """The FFD-packed block-diagonal encoder gives the same kept features as each frame's kept patches run alone."""
    inputs = SB.molmo2_inputs(PADDED)
    h = patched()
    with torch.no_grad():
        out = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_token_pooling"],
                                             inputs["video_grids"])
        ref = _reference_encode(model, h, inputs)
    got = torch.cat(out.pooler_output)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_pruned_logits_equal_unpatched_model_on_kept_tokens(model, patched):
    """Reference LLM side: the UNPATCHED inner model fed the kept ids, kept features and original positions."""
    inputs = SB.molmo2_inputs(PADDED)
    h = patched()
    got = logits(model, inputs)
    plan = h._plan
    feats = h.encodes("stts").entries[-1][0]
    h.remove()
    ids = plan.gather(inputs["input_ids"]).masked_fill(plan.attention_mask == 0, 0)
    full = torch.arange(inputs["input_ids"].shape[1]).expand_as(inputs["input_ids"])
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=plan.attention_mask, position_ids=plan.gather(full),
                    mm_token_type_ids=(ids == SB.PATCH_TOKEN).long(), mm_encoder_outputs={"video": feats}).logits
    real = plan.attention_mask.bool()
    torch.testing.assert_close(got[real], ref[real], atol=1e-5, rtol=1e-5)


def test_task_loss_and_aux_loss_each_reach_the_scorer(model, patched):
    """Training: the task loss (via the key bias) and outputs.stts_aux_loss both give the scorer non-zero gradients."""
    inputs = SB.molmo2_inputs(ONE)
    labels = inputs["input_ids"].clone()
    labels[:, :-4] = -100
    h = patched()
    model.train()
    for part in ("task", "aux"):
        h.scorer.zero_grad(set_to_none=True)
        out = model(**inputs, labels=labels)
        assert out.stts_aux_loss is not None and out.stts_aux_loss.requires_grad
        (out.loss if part == "task" else out.stts_aux_loss).backward()
        grads = [p.grad for p in h.scorer.mlp.parameters()]
        assert all(g is not None for g in grads), part
        assert sum(float(g.abs().sum()) for g in grads) > 0, part


def test_training_loss_uses_labels_in_the_pruned_layout(model, patched):
    """outputs.loss equals cross-entropy of the pruned logits against the gathered labels."""
    inputs = SB.molmo2_inputs(PADDED)
    labels = inputs["input_ids"].masked_fill((inputs["attention_mask"] == 0) | (inputs["mm_token_type_ids"] != 0), -100)
    h = patched()
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    lab = h._plan.gather(labels).masked_fill(h._plan.attention_mask == 0, -100)
    ref = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), lab[:, 1:].reshape(-1),
                                            ignore_index=-100)
    torch.testing.assert_close(out.loss, ref)


def test_labels_on_pruned_video_tokens_are_rejected(model, patched):
    """A label on a video token that STTS drops raises (it would silently leave the loss)."""
    inputs = SB.molmo2_inputs(ONE)
    patched()
    with torch.no_grad(), pytest.raises(ValueError, match="-100"):
        model(**inputs, labels=inputs["input_ids"])


def test_generate_equals_explicit_greedy_decode(model, patched):
    """generate (greedy, cached) gives the tokens of a no-cache argmax loop over the patched model."""
    inputs = SB.molmo2_inputs(ONE)
    patched()
    steps = 4
    gen = model.generate(**inputs, max_new_tokens=steps, do_sample=False)[:, inputs["input_ids"].shape[1]:]
    ids, attn = inputs["input_ids"], inputs["attention_mask"]
    mm = inputs["mm_token_type_ids"]
    ref = []
    for _ in range(steps):
        kw = dict(inputs, input_ids=ids, attention_mask=attn, mm_token_type_ids=mm)
        with torch.no_grad():
            nxt = model(**kw, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ref.append(nxt)
        ids = torch.cat([ids, nxt], 1)
        attn = torch.cat([attn, torch.ones_like(nxt)], 1)
        mm = torch.cat([mm, torch.zeros_like(nxt)], 1)
    assert torch.equal(gen, torch.cat(ref, 1))


def test_generate_with_padded_batch_runs_and_prunes(model, patched):
    """A left-padded batch generates a few tokens with pruning on (decode masks follow the pruned cache)."""
    inputs = SB.molmo2_inputs(PADDED)
    h = patched()
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 3)
    assert h.stats.sequence_length_after < h.stats.sequence_length_before


def test_save_then_load_scorer_gives_identical_outputs(model, patched, tmp_path):
    """save_scorer -> STTSConfig(scorer_path=...) on a fresh patch reproduces the logits exactly."""
    inputs = SB.molmo2_inputs(ONE)
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
    h3 = patched()  # fresh init: the trained weights mattered
    assert not torch.equal(logits(model, inputs), before)


def test_scorer_fingerprint_mismatch_is_a_clear_error(model, patched, tmp_path):
    """A scorer saved with prune_at=1 refuses to load at prune_at=2 (ValueError naming the field)."""
    h = patched()
    path = str(tmp_path / "scorer.safetensors")
    h.save_scorer(path)
    h.remove()
    with pytest.raises(ValueError, match="fingerprint mismatch.*prune_at"):
        patched(prune_at=2, scorer_path=path)
    with pytest.raises(ValueError, match="mlp_hidden"):
        patched(mlp_hidden=8, scorer_path=path)


def _layer_features(model, inputs):
    vt = model.model.vision_tower
    x = vt.patch_embedding(inputs["pixel_values_videos"]) + vt.positional_embedding[None]
    for i in range(PRUNE_AT + 1):
        x = vt.layers[i](x, None)
    return x.view(-1, SB.M_FRAMES, SB.M_SIDE, SB.M_SIDE, x.shape[-1])


@pytest.mark.parametrize("method", ["random", "prev_frame_similarity", "ref_frame_similarity"])
def test_baselines_prune_through_the_same_path(model, patched, method):
    """Baselines keep exactly the budget, select what their score says on the layer-prune_at windows, and generate."""
    inputs = SB.molmo2_inputs(PADDED)
    h = patched(method=method)
    assert h.scorer is None
    logits(model, inputs)
    with torch.no_grad():
        feats = _layer_features(model, inputs)
    for v, sel in enumerate(h.last_selection):
        wf = window_mean(feats[v], SB.M_POOL)
        if method == "prev_frame_similarity":
            s = prev_frame_scores(wf)
        elif method == "ref_frame_similarity":
            s = ref_frame_scores(wf, 0.85)
        else:
            s = torch.rand(wf.shape[:3], generator=torch.Generator().manual_seed(v))
        assert torch.equal(sel.selection.keep_pooled, select_tokens(s, RATIO, SB.M_POOL).keep_pooled)
        assert sel.bias is None
    model.generate(**inputs, max_new_tokens=2, do_sample=False)


def test_disabled_and_remove_restore_the_unpatched_model(model, patched):
    """videoprune.disabled() runs unpruned; remove() restores the original methods exactly."""
    inputs = SB.molmo2_inputs(ONE)
    before = logits(model, inputs)
    h = patched()
    with videoprune.disabled(model):
        assert torch.equal(logits(model, inputs), before)
    h.remove()
    assert "forward" not in model.model.__dict__ and "forward" not in model.__dict__
    assert torch.equal(logits(model, inputs), before)


def test_bad_settings_raise_value_errors(model):
    """prune_at past the deepest tapped block, or a scorer_path with a baseline, is a ValueError."""
    with pytest.raises(ValueError, match="prune_at"):
        videoprune.patch(model, cfg(prune_at=SB.M_VIT_LAYERS - 1))
    with pytest.raises(ValueError, match="scorer_path"):
        videoprune.patch(model, cfg(method="random", scorer_path="x.safetensors"))
    assert not hasattr(model, "_videoprune_handle")
