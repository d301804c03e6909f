"""patch() on tiny random models of every supported family: exactness, positions, generate, reversal."""

from __future__ import annotations

import pytest
import torch

import builders as B
import reference as R
import videoprune
from builders import patched
from videoprune.core.evs import retained_count

RATE = 0.75
ATOL = 1e-5
FAMILY = pytest.mark.parametrize("family", B.FAMILIES)
ONE = [[("text", 3), ("video",), ("text", 4)]]
PADDED = [[("text", 3), ("video",), ("text", 4)], [("text", 7), ("video",), ("text", 2)],
          [("text", 1), ("video",), ("text", 9), ("video",), ("text", 1)]]


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


class LLMInput:
    """Records what the language model's decoder actually gets (after any patch wrapper runs)."""

    def __init__(self, model):
        lm = model.model.language_model
        self.seen = {}
        self._hooks = [
            lm.rotary_emb.register_forward_pre_hook(self._rotary),
            lm.layers[0].register_forward_pre_hook(self._layer, with_kwargs=True),
        ]

    def _rotary(self, module, args):
        self.seen["inputs_embeds"], self.seen["position_ids"] = args[0], args[1]

    def _layer(self, module, args, kwargs):
        self.seen["mask"] = kwargs.get("attention_mask")

    def real_per_row(self):
        """(B,) real tokens per row, from the 4D mask the last query attends with."""
        mask = self.seen["mask"]
        last = mask[:, 0, -1, :]
        return (last if last.dtype == torch.bool else last == 0).sum(-1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()


def tokens_per_video(family):
    if family == "llava_onevision":
        s = (B.LLAVA_IMAGE_SIZE // B.LLAVA_PATCH + 1) // 2
        return s * s, B.LLAVA_FRAMES
    hw = B.QWEN_GRID_HW // 2
    return hw * hw, B.QWEN_FRAMES // 2


@FAMILY
def test_rate_zero_gives_logits_identical_to_unpatched(tiny, family):
    model = tiny(family)
    inputs = B.make_inputs(family, PADDED, model=model)
    before = logits(model, inputs)
    with patched(model, videoprune.EVSConfig(rate=0.0)):
        after = logits(model, inputs)
    assert torch.equal(before, after)


@FAMILY
def test_llm_receives_exactly_text_plus_retained_tokens(tiny, family):
    model = tiny(family)
    inputs = B.make_inputs(family, PADDED, model=model)
    with LLMInput(model) as rec, patched(model, videoprune.EVSConfig(rate=RATE)):
        logits(model, inputs)
    per_frame, frames = tokens_per_video(family)
    kept_video = retained_count(per_frame, frames, RATE)
    extra = 1 if family == "llava_onevision" else 0  # the never-pruned newline
    ids, attn = inputs["input_ids"], inputs["attention_mask"].bool()
    n_videos = [sum(1 for s in row if s[0] == "video") for row in PADDED]
    text = ((ids != B.VIDEO_TOKEN) & attn).sum(1)
    expected = text + torch.tensor(n_videos) * (kept_video + extra)
    assert torch.equal(rec.real_per_row().cpu(), expected)
    assert rec.seen["inputs_embeds"].shape[1] == int(expected.max())


@FAMILY
def test_logits_equal_explicit_gather_reference(tiny, family):
    model = tiny(family)
    inputs = B.make_inputs(family, PADDED, model=model)
    ref = R.reference_logits(family, model, inputs, RATE)
    with patched(model, videoprune.EVSConfig(rate=RATE)):
        out = logits(model, inputs)
    assert out.shape == ref.shape
    real = R.reference_prefill(family, model, inputs, RATE)[2].bool()
    torch.testing.assert_close(out[real], ref[real], atol=ATOL, rtol=0)


@FAMILY
def test_greedy_generate_equals_reference_decode(tiny, family):
    model = tiny(family)
    inputs = B.make_inputs(family, PADDED[:2], model=model)
    ref = R.reference_greedy(family, model, inputs, RATE, steps=10)
    with patched(model, videoprune.EVSConfig(rate=RATE)):
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    assert torch.equal(out[:, -10:], ref)


@FAMILY
def test_sampled_generate_at_rate_zero_equals_unpatched(tiny, family):
    """Sampling with a KV cache goes through the decode remapping; at rate 0 it must change nothing."""
    model = tiny(family)
    inputs = B.make_inputs(family, PADDED[:2], model=model)
    kw = dict(max_new_tokens=6, do_sample=True, top_k=0, temperature=1.0)
    torch.manual_seed(3)
    with torch.no_grad():
        base = model.generate(**inputs, **kw)
    with patched(model, videoprune.EVSConfig(rate=0.0)):
        torch.manual_seed(3)
        with torch.no_grad():
            out = model.generate(**inputs, **kw)
    assert torch.equal(base, out)


@FAMILY
def test_remove_restores_outputs_and_methods(tiny, family):
    model = tiny(family)
    inputs = B.make_inputs(family, ONE, model=model)
    before = logits(model, inputs)
    inner, lm = model.model, model.model.language_model
    handle = videoprune.patch(model, videoprune.EVSConfig(rate=RATE))
    assert logits(model, inputs).shape[1] < before.shape[1]
    handle.remove()
    assert "forward" not in inner.__dict__ and "forward" not in lm.__dict__
    assert "get_video_features" not in inner.__dict__
    assert torch.equal(logits(model, inputs), before)


@FAMILY
def test_batch_of_three_padded_prompts_equals_each_alone(tiny, family):
    model = tiny(family)
    batch = B.make_inputs(family, PADDED, model=model)
    with patched(model, videoprune.EVSConfig(rate=RATE)) as handle:
        out = logits(model, batch)
        mask = handle._state.pruned_mask.bool()
        for i, prompt in enumerate(PADDED):
            alone = B.make_inputs(family, [prompt], model=model)
            # same pixels as in the batch: rebuild by slicing the batch's videos
            alone = _slice_row(family, batch, i, alone)
            single = logits(model, alone)[0]
            torch.testing.assert_close(out[i][mask[i]], single, atol=ATOL, rtol=0)


def _slice_row(family, batch, row, alone):
    """The batch's row ``row`` as a batch of one (unpadded), with that row's own videos."""
    real = batch["attention_mask"][row].bool()
    out = {"input_ids": batch["input_ids"][row][real][None], "attention_mask": batch["attention_mask"][row][real][None]}
    counts = [sum(1 for s in p if s[0] == "video") for p in PADDED]
    first, n = sum(counts[:row]), counts[row]
    if family == "llava_onevision":
        out["pixel_values_videos"] = batch["pixel_values_videos"][first : first + n]
    else:
        out["mm_token_type_ids"] = batch["mm_token_type_ids"][row][real][None]
        grids = batch["video_grid_thw"]
        sizes = (grids.prod(-1)).tolist()
        start = sum(sizes[:first])
        out["pixel_values_videos"] = batch["pixel_values_videos"][start : start + sum(sizes[first : first + n])]
        out["video_grid_thw"] = grids[first : first + n]
    return out


@FAMILY
@pytest.mark.parametrize("order", ["video_then_image", "image_then_video"])
def test_video_and_image_in_one_prompt_match_reference(tiny, family, order):
    model = tiny(family)
    segs = [("video",), ("text", 2), ("image",)] if order == "video_then_image" else [("image",), ("text", 2), ("video",)]
    prompts = [[("text", 2), *segs, ("text", 3)], [("text", 5), *segs, ("text", 1)]]
    inputs = B.make_inputs(family, prompts, model=model)
    ref = R.reference_logits(family, model, inputs, RATE)
    with patched(model, videoprune.EVSConfig(rate=RATE)) as handle:
        out = logits(model, inputs)
        n_image = int((inputs["input_ids"] == B.IMAGE_TOKEN).sum())
        assert handle.stats.sequence_length_after < handle.stats.sequence_length_before
    real = R.reference_prefill(family, model, inputs, RATE)[2].bool()
    torch.testing.assert_close(out[real], ref[real], atol=ATOL, rtol=0)
    assert n_image > 0


def test_qwen3_vl_kept_tokens_stay_after_their_own_frame_timestamp(tiny):
    """Each kept token of slice t sits between timestamp t and timestamp t+1 after pruning."""
    family = "qwen3_vl"
    model = tiny(family)
    inputs = B.make_inputs(family, PADDED[:1], model=model)
    full = R.capture_lm_inputs(model, inputs)
    with LLMInput(model) as rec, patched(model, videoprune.EVSConfig(rate=RATE)) as handle:
        logits(model, inputs)
        per_frame = handle.stats.videos[0].kept_per_frame
    seen = rec.seen
    # identify each pruned slot's source token by its (embedding, 3-axis position)
    fe, fp = full["inputs_embeds"][0], full["position_ids"][:, 0]
    pe, pp = seen["inputs_embeds"][0], seen["position_ids"][:, 0]
    src = []
    for j in range(pe.shape[0]):
        cand = ((fp == pp[:, j : j + 1]).all(0) & (fe == pe[j]).all(-1)).nonzero().flatten()
        assert len(cand) == 1
        src.append(int(cand))
    assert src == sorted(src), "kept tokens must keep their order"
    ids = inputs["input_ids"][0]
    starts = (ids == B.VISION_START).nonzero().flatten().tolist()  # one per temporal slice
    assert set(starts) <= set(src), "every frame's timestamp/vision_start is kept"
    src_t = torch.tensor(src)
    counted = tuple(int(((src_t > a) & (src_t < b) & (ids[src_t] == B.VIDEO_TOKEN)).sum())
                    for a, b in zip(starts, starts[1:] + [len(ids)]))
    assert counted == per_frame
    assert len(set(per_frame[1:])) > 1, "test needs uneven per-frame counts to mean anything"


def test_unsupported_model_raises_listing_supported_families():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ValueError, match="qwen2_vl.*qwen3_vl"):
        videoprune.patch(model, videoprune.EVSConfig())


def test_patching_twice_raises(tiny):
    model = tiny("qwen2_vl")
    with patched(model, videoprune.EVSConfig()):
        with pytest.raises(RuntimeError, match="already patched"):
            videoprune.patch(model, videoprune.EVSConfig())


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_disabled_runs_unpruned_and_restores_pruning(tiny, family):
    model = tiny(family)
    inputs = B.make_inputs(family, ONE, model=model)
    base = logits(model, inputs)
    with patched(model, videoprune.EVSConfig(rate=RATE)):
        pruned = logits(model, inputs)
        with videoprune.disabled(model):
            assert torch.equal(logits(model, inputs), base)
        assert torch.equal(logits(model, inputs), pruned)
    with pytest.raises(ValueError, match="not patched"):
        with videoprune.disabled(model):
            pass


@FAMILY
def test_stats_report_tokens_per_video_and_frame(tiny, family):
    model = tiny(family)
    inputs = B.make_inputs(family, PADDED, model=model)
    per_frame, frames = tokens_per_video(family)
    with patched(model, videoprune.EVSConfig(rate=RATE)) as handle:
        logits(model, inputs)
        stats = handle.stats
    assert len(stats.videos) == 4
    for v in stats.videos:
        assert v.tokens_before == per_frame * frames
        assert v.tokens_after == retained_count(per_frame, frames, RATE) == sum(v.kept_per_frame)
        assert len(v.kept_per_frame) == frames and v.kept_per_frame[0] == per_frame
    assert stats.sequence_length_before == inputs["input_ids"].shape[1]


@FAMILY
def test_bfloat16_rate_zero_is_identical_and_pruning_runs(tiny, family):
    model = tiny(family, torch.bfloat16)
    inputs = B.make_inputs(family, PADDED[:2], model=model, dtype=torch.bfloat16)
    base = logits(model, inputs)
    with patched(model, videoprune.EVSConfig(rate=0.0)):
        assert torch.equal(logits(model, inputs), base)
    with patched(model, videoprune.EVSConfig(rate=RATE)):
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 3)


@pytest.mark.parametrize("family", B.QWEN_FAMILIES)
def test_pixel_criterion_keeps_what_core_pixel_selection_keeps(tiny, family):
    from videoprune.core.evs import pixel_retention_mask

    model = tiny(family)
    inputs = B.make_inputs(family, ONE, model=model)
    with patched(model, videoprune.EVSConfig(rate=RATE, criterion="pixel")) as handle:
        logits(model, inputs)
        per_frame = handle.stats.videos[0].kept_per_frame
    mask = pixel_retention_mask(inputs["pixel_values_videos"], inputs["video_grid_thw"], 2, rate=RATE)
    assert per_frame == tuple(mask.view(B.QWEN_FRAMES // 2, -1).sum(1).tolist())


def test_pixel_criterion_on_llava_onevision_is_rejected(tiny):
    with pytest.raises(ValueError, match="pixel"):
        videoprune.patch(tiny("llava_onevision"), videoprune.EVSConfig(criterion="pixel"))


def test_threshold_mode_keeps_between_the_fraction_bounds(tiny):
    model = tiny("qwen2_vl")
    inputs = B.make_inputs("qwen2_vl", ONE, model=model)
    cfg = videoprune.EVSConfig(threshold=0.0, min_keep_fraction=0.3, max_keep_fraction=0.5)
    with patched(model, cfg) as handle:
        logits(model, inputs)
        v = handle.stats.videos[0]
    assert 0.3 * v.tokens_before <= v.tokens_after <= 0.5 * v.tokens_before


@FAMILY
def test_random_criterion_keeps_the_evs_budget_with_frame_zero(tiny, family):
    """criterion='random' keeps exactly EVS's count per video, frame 0 whole, and is reproducible."""
    model = tiny(family)
    inputs = B.make_inputs(family, ONE, model=model)
    runs = []
    for _ in range(2):
        with patched(model, videoprune.EVSConfig(rate=RATE, criterion="random", seed=5)) as handle:
            first = logits(model, inputs)
            v = handle.stats.videos[0]
            logits(model, inputs)  # a second call draws new scores
            second_pattern = handle.stats.videos[0].kept_per_frame
        runs.append((first, v.kept_per_frame, second_pattern))
        per_frame = v.tokens_before // len(v.kept_per_frame)
        assert v.tokens_after == retained_count(per_frame, len(v.kept_per_frame), RATE)
        assert v.kept_per_frame[0] == per_frame
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1:] == runs[1][1:]


def test_random_criterion_seed_must_be_an_int():
    with pytest.raises(ValueError, match="seed"):
        videoprune.EVSConfig(criterion="random", seed=1.5)


@pytest.mark.parametrize("family", B.QWEN_FAMILIES)
def test_pixel_criterion_works_under_generate(tiny, family):
    """generate() encodes videos before the first forward; the pixel criterion still finds the pixels."""
    from videoprune.core.evs import pixel_retention_mask

    model = tiny(family)
    inputs = B.make_inputs(family, ONE, model=model)
    with patched(model, videoprune.EVSConfig(rate=RATE, criterion="pixel")) as handle:
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=2, do_sample=False)
        per_frame = handle.stats.videos[0].kept_per_frame
    mask = pixel_retention_mask(inputs["pixel_values_videos"], inputs["video_grid_thw"], 2, rate=RATE)
    assert per_frame == tuple(mask.view(B.QWEN_FRAMES // 2, -1).sum(1).tolist())
