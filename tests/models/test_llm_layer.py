"""The shared LLM-side layer (videoprune.llm): one labels/loss wrapper for EVS and STTS, phase timings, encode cache."""

from __future__ import annotations

import contextlib
import functools
import time

import pytest
import torch

import builders as B
import stts_builders as SB
import videoprune
from videoprune.core.plan import build_plan, video_keep_stats
from videoprune.llm import PHASES, EncodeCache

RATE = 0.5
ANSWER_TOKENS = 4  # the last tokens of each row carry labels (text in every builder's rows)
# method x family: what patch() is given, on which tiny model
SETUPS = ("evs-qwen2_5_vl", "evs-pre-qwen2_vl", "stts-molmo2", "stts-qwen2_5_vl")
LABELLED = ("evs-qwen2_5_vl", "stts-molmo2", "stts-qwen2_5_vl")


@functools.lru_cache(maxsize=None)
def _stts_model(family: str):
    return {"molmo2": SB.build_molmo2, "qwen2_5_vl": SB.build_qwen25}[family]()


@pytest.fixture
def models(tiny):
    """``models(family)``: the shared tiny EVS model of a family, or ``stts:<family>`` for the STTS test models."""
    return lambda family: _stts_model(family[5:]) if family.startswith("stts:") else tiny(family)


@contextlib.contextmanager
def setup(models, name: str):
    """``(model, inputs, handle)`` for one entry of SETUPS; the handle is removed afterwards."""
    if name == "stts-molmo2":
        model, inputs, cfg = models("stts:molmo2"), SB.molmo2_inputs([(3, 4)]), SB.stts_cfg()
    elif name == "stts-qwen2_5_vl":
        model, cfg = models("stts:qwen2_5_vl"), SB.stts_cfg()
        inputs = B.make_inputs("qwen2_5_vl", [[("text", 3), ("video",), ("text", 6)]])
    else:
        family = "qwen2_vl" if name.startswith("evs-pre") else "qwen2_5_vl"
        stage = "pre_encoder" if name.startswith("evs-pre") else "post_encoder"
        model = models(family)
        cfg = videoprune.EVSConfig(rate=RATE, criterion="pixel" if stage == "pre_encoder" else "embedding", stage=stage)
        inputs = B.make_inputs(family, [[("text", 3), ("video",), ("text", 6)]])
    handle = videoprune.patch(model, cfg)
    try:
        yield model, inputs, handle
    finally:
        handle.remove()


def answer_labels(inputs: dict) -> torch.Tensor:
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -ANSWER_TOKENS:] = inputs["input_ids"][:, -ANSWER_TOKENS:]
    return labels


@pytest.mark.parametrize("name", LABELLED)
def test_num_items_in_batch_divides_the_summed_loss(models, name):
    """With num_items_in_batch = n the loss is the summed token loss over n (HF's convention), for EVS and STTS alike."""
    with setup(models, name) as (model, inputs, _), torch.no_grad():
        labels = answer_labels(inputs)
        mean = model(**inputs, labels=labels).loss
        n = 3 * ANSWER_TOKENS
        scaled = model(**inputs, labels=labels, num_items_in_batch=torch.tensor(n)).loss
    counted = ANSWER_TOKENS * labels.shape[0]  # every answer label has a predecessor, so all count
    torch.testing.assert_close(scaled, mean * counted / n)


@pytest.mark.parametrize("name", LABELLED)
@pytest.mark.parametrize("kwargs, match", [({"logits_to_keep": 1}, "logits_to_keep"),
                                           ({"return_dict": False}, "return_dict=False")])
def test_labels_with_unsupported_output_options_are_rejected(models, name, kwargs, match):
    """labels with logits_to_keep != 0 or return_dict=False raise, for EVS and STTS alike (the loss needs all logits)."""
    with setup(models, name) as (model, inputs, _), torch.no_grad(), pytest.raises(ValueError, match=match):
        model(**inputs, labels=answer_labels(inputs), **kwargs)


@pytest.mark.parametrize("name", ("stts-qwen2_5_vl", "stts-molmo2"))
def test_stts_wraps_the_outer_forward_once(models, name):
    """STTS installs one outer-forward wrapper, around the model's own forward (not a wrapper around a wrapper)."""
    with setup(models, name) as (model, _, _):
        wrapper = model.__dict__["forward"]
        assert wrapper.__wrapped__ == type(model).forward.__get__(model)


@pytest.mark.parametrize("name", SETUPS)
def test_timings_are_zero_unless_switched_on(models, name):
    """A handle times nothing by default: every phase stays at 0 seconds after a call."""
    with setup(models, name) as (model, inputs, handle), torch.no_grad():
        model(**inputs)
        assert handle.timings == dict.fromkeys(PHASES, 0.0)


@pytest.mark.parametrize("name", SETUPS)
def test_timings_record_each_phase_within_the_call(models, name):
    """With timing on, encode, select and prefill each take time, and together no more than the whole call."""
    with setup(models, name) as (model, inputs, handle), torch.no_grad():
        handle.timing = True
        start = time.perf_counter()
        model(**inputs)
        wall = time.perf_counter() - start
        t = handle.timings
        assert set(t) == set(PHASES)
        assert all(t[p] > 0 for p in PHASES), t
        assert sum(t.values()) <= wall
        assert handle.stats.tokens_after < handle.stats.tokens_before  # token counts beside the times
        handle.reset_timings()
        assert handle.timings == dict.fromkeys(PHASES, 0.0)


def test_decode_steps_add_no_prefill_time(models):
    """generate's decode steps are not prefills: the prefill phase grows by one forward per generate, not per token."""
    with setup(models, "evs-qwen2_5_vl") as (model, inputs, handle), torch.no_grad():
        handle.timing = True
        model(**inputs)
        one = handle.timings["prefill"]
        handle.reset_timings()
        model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert handle.timings["prefill"] < 4 * one  # one prefill (and noise), not six forwards


def test_encode_cache_keeps_the_last_four_and_finds_by_identity():
    """EncodeCache finds an entry by the identity of its first item, and forgets all but the last four."""
    cache = EncodeCache()
    keys = [torch.zeros(1) for _ in range(6)]
    for i, k in enumerate(keys):
        cache.add(k, i)
    assert [e[1] for e in cache.entries] == [2, 3, 4, 5]
    assert cache.find(keys[3]) == (keys[3], 3)
    assert cache.find(keys[0]) is None
    assert cache.find(torch.zeros(1)) is None  # equal values, another object
    assert cache.latest() == (keys[5], 5)


def test_video_keep_stats_match_the_plans_counts():
    """video_keep_stats gives the per-video, per-slice counts that build_plan records for the same keep mask."""
    grids, merge = [(2, 4, 4), (3, 2, 4)], 2
    n = 2 * 4 + 3 * 2
    keep = torch.tensor([True, False] * (n // 2))
    placeholder = torch.zeros(1, n + 3, dtype=torch.bool)
    placeholder[0, 2:2 + n] = True
    plan = build_plan(placeholder, keep, grid_thw=grids, spatial_merge_size=merge)
    stats = video_keep_stats(keep, grids, merge)
    assert stats == plan.videos
    assert [s.kept_per_frame for s in stats] == [(2, 2), (1, 1, 1)]


def test_score_and_select_takes_a_plain_namespace_untimed():
    """score_and_select works on the vLLM plug-in's namespace (config, scorer), with select_videos' selections and loss."""
    from types import SimpleNamespace

    from videoprune.stts.hf import score_and_select, select_videos
    from videoprune.stts.scorer import STTSScorer

    cfg, pool, width = SB.stts_cfg(), 2, 8
    torch.manual_seed(0)
    scorer = STTSScorer(width, pool, cfg.mlp_hidden, cfg.attn_dim)
    grids = [torch.randn(3, 4, 4, width), torch.randn(2, 4, 6, width)]
    state = SimpleNamespace(config=cfg, scorer=scorer, aux_loss=None, last_selection=())
    got = score_and_select(state, grids, pool, training=True)
    want, aux = select_videos(cfg, scorer, grids, pool, training=True)
    assert [torch.equal(g.keep_flat, w.keep_flat) for g, w in zip(got, want)] == [True, True]
    assert state.last_selection == tuple(got) and torch.equal(state.aux_loss, aux)
