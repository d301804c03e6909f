"""Inference faults: concurrent calls, requests too large to fit, bad files, bad settings, autograd inputs.

Each test states one rule and asserts the one-line error text a user sees. Tiny random models
(tests/models builders) keep every test to a few seconds on the CPU.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))

pytest.importorskip("transformers")

import builders  # noqa: E402
import stts_builders  # noqa: E402

import videoprune  # noqa: E402
from videoprune import EVSConfig  # noqa: E402

# ---------------------------------------------------------------------------------------------
# concurrency: two threads x ROUNDS generates on one patched model == the sequential outputs
# ---------------------------------------------------------------------------------------------
THREADS = 2
ROUNDS = 6
NEW_TOKENS = 5


def _qwen_prompts(family: str) -> list[dict]:
    """One prompt per thread, of different lengths and video counts (so their plans differ)."""
    return [builders.make_inputs(family, [[("text", 3), ("video",), ("text", 2)]], seed=1),
            builders.make_inputs(family, [[("text", 6), ("video",), ("text", 4), ("video",), ("text", 1)]], seed=2)]


def _molmo2_prompts() -> list[dict]:
    """A left-padded batch of two (its decode mask has padding holes) and a single prompt."""
    return [stts_builders.molmo2_inputs([(3, 2), (6, 1)], seed=1), stts_builders.molmo2_inputs([(7, 4)], seed=2, frames=4)]


def _generate(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)


@contextlib.contextmanager
def _lockstep(model, parties: int):
    """Make the threads wait for each other twice in every forward: at the token embedding and at the first LLM layer.

    Between the two points a call has entered the patched forward (its inputs recorded) and
    pruned its prefill; so every thread records, then every thread prunes and decodes with the
    others' records in between: the interleavings that per-call state kept on the handle gets
    wrong, forced on every step rather than left to the scheduler. Each generate makes
    NEW_TOKENS forwards (the tiny models have no EOS token), so the parties always match.
    """
    step = threading.Barrier(parties, timeout=30)

    def wait(module, args):
        step.wait()

    hooks = [m.register_forward_pre_hook(wait)
             for m in (model.get_input_embeddings(), model.model.language_model.layers[0])]
    try:
        yield step
    finally:
        for h in hooks:
            h.remove()


def _run_concurrently(model, prompts: list[dict]) -> tuple[list[list[torch.Tensor]], list[BaseException]]:
    """Each thread generates its own prompt ROUNDS times, the threads in lockstep (see _lockstep)."""
    barrier = threading.Barrier(len(prompts), timeout=60)
    outs: list[list[torch.Tensor]] = [[] for _ in prompts]
    errors: list[BaseException] = []

    def work(i):
        try:
            for _ in range(ROUNDS):
                barrier.wait()
                outs[i].append(_generate(model, prompts[i]))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
            barrier.abort()
            step.abort()

    with _lockstep(model, len(prompts)) as step:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    return outs, [e for e in errors if not isinstance(e, threading.BrokenBarrierError)] or errors


CONCURRENT_CASES = {
    "evs-post-encoder": ("qwen2_5_vl", lambda: EVSConfig(rate=0.75)),
    "evs-pre-encoder": ("qwen2_5_vl", lambda: EVSConfig(rate=0.75, criterion="pixel", stage="pre_encoder")),
    "evs-qwen3-vl": ("qwen3_vl", lambda: EVSConfig(rate=0.5)),
    "stts-qwen2_5_vl": ("stts-qwen2_5_vl", lambda: stts_builders.stts_cfg()),
    "stts-molmo2": ("molmo2", lambda: stts_builders.stts_cfg()),
}


def _model_and_prompts(kind: str):
    if kind == "molmo2":
        return stts_builders.build_molmo2(), _molmo2_prompts()
    if kind == "stts-qwen2_5_vl":
        return stts_builders.build_qwen25(), _qwen_prompts("qwen2_5_vl")
    return builders.build_model(kind), _qwen_prompts(kind)


@pytest.mark.parametrize("case", list(CONCURRENT_CASES))
def test_concurrent_generate_on_one_patched_model_equals_sequential(case):
    """Two threads generating on one patched model get exactly the tokens and stats of sequential runs."""
    kind, make_cfg = CONCURRENT_CASES[case]
    model, prompts = _model_and_prompts(kind)
    handle = videoprune.patch(model, make_cfg())
    try:
        expected, expected_stats = [], []
        for p in prompts:
            expected.append(_generate(model, p))
            expected_stats.append(handle.stats)
        assert expected_stats[0].tokens_after < expected_stats[0].tokens_before  # it does prune
        outs, errors = _run_concurrently(model, prompts)
        assert not errors, f"a thread failed: {errors[0]!r}"
        for i, runs in enumerate(outs):
            assert len(runs) == ROUNDS
            for r, out in enumerate(runs):
                assert torch.equal(out, expected[i]), f"thread {i}, round {r}: output differs from the sequential run"
    finally:
        handle.remove()


def test_stats_are_per_thread():
    """handle.stats holds the calling thread's last prefill; a thread that ran none sees None."""
    model = builders.build_model("qwen2_5_vl")
    small, large = _qwen_prompts("qwen2_5_vl")
    with builders.patched(model, EVSConfig(rate=0.5)) as handle:
        _generate(model, large)
        seen = {}

        def other():
            seen["before"] = handle.stats
            _generate(model, small)
            seen["after"] = handle.stats

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert seen["before"] is None
        assert len(seen["after"].videos) == 1
        assert len(handle.stats.videos) == 2  # this thread's stats were not overwritten


def test_disabled_switches_pruning_off_for_the_calling_thread_only():
    """videoprune.disabled(model) in one thread leaves another thread's calls pruned."""
    model = builders.build_model("qwen2_5_vl")
    prompt = _qwen_prompts("qwen2_5_vl")[0]
    with builders.patched(model, EVSConfig(rate=0.75)) as handle:
        pruned = _generate(model, prompt)
        inside, outside = threading.Event(), threading.Event()
        result = {}

        def other():
            inside.wait(30)
            result["out"], result["stats"] = _generate(model, prompt), handle.stats
            outside.set()

        t = threading.Thread(target=other)
        t.start()
        with videoprune.disabled(model):
            inside.set()
            outside.wait(30)
            assert not handle.active
        t.join()
        assert torch.equal(result["out"], pruned)
        assert result["stats"].tokens_after < result["stats"].tokens_before

