"""Two gloo ranks on CPU: each reads its own shard, gradients are identical on both ranks after every step."""

from __future__ import annotations

import json

import pytest
import torch.multiprocessing as mp

import ddpkit

WORLD = 2
STEPS = 3


def run_ranks(toy_jsonl, tmp_path, **overrides) -> list[dict]:
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(ddpkit.worker, args=(WORLD, str(tmp_path / "init"), str(toy_jsonl), str(out), overrides),
             nprocs=WORLD, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp"])  # FSDP needs an accelerator (see test_train)
def test_two_gloo_ranks_have_identical_gradients_and_disjoint_shards(toy_jsonl, tmp_path, strategy):
    ranks = run_ranks(toy_jsonl, tmp_path, max_steps=STEPS, strategy=strategy, rate_dist="uniform:0.2,0.8",
                      export_rate=0.5, save_every=1)
    for s in range(STEPS):
        r0, r1 = ranks[0]["steps"][s], ranks[1]["steps"][s]
        assert r0["grads_equal"] and r1["grads_equal"] and r0["grad_norm"] > 0
        assert not set(r0["indices"]) & set(r1["indices"])  # each rank reads its own shard
        assert r0["local_loss"] != r1["local_loss"]  # ... so the local losses differ, yet the gradients agree
        assert r0["loss"] == r1["loss"] and r0["rates"] == r1["rates"]
    assert ranks[0]["export"] is not None
