"""`videoprune bench speed` on a tiny scaled config: fields, counts and KV sizes agree with the core."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from videoprune.bench.configs import ARCHITECTURES, build_model, scale_config  # noqa: E402
from videoprune.bench.speed import METHODS, SpeedConfig, kv_cache_bytes, run_speed  # noqa: E402
from videoprune.core.evs import retained_count  # noqa: E402

REQUIRED = ("frames", "rate", "method", "tokens_llm", "vision_s", "llm_prefill_s", "ttft_s", "kv_cache_bytes",
            "preprocess_s", "selection_s", "decode_tok_s", "peak_mem_bytes", "spread", "tokens_video_kept")
TINY = dict(model="qwen2.5-vl-3b", scale=0.03, frames="4,6", rates="0,0.5", method="evs,evs-pre", repeats=1,
            warmup=0, decode_tokens=2, video="random", max_pixels=56 * 56 * 2, prompt_tokens=6)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return run_speed(SpeedConfig(**TINY, out=str(tmp_path_factory.mktemp("speed") / "r")), progress=False)


def test_every_result_has_every_field(report):
    """Each setting (baseline + methods x rates, per frame count) carries all reported fields."""
    res = report["results"]
    assert len(res) == 2 * (1 + 2 * 2)
    for r in res:
        missing = [k for k in REQUIRED if k not in r]
        assert not missing, missing
        assert r["ttft_s"] > 0 and r["llm_prefill_s"] > 0
    json.dumps(report)  # serialisable


def test_kept_tokens_equal_core_retained_count(report):
    """Kept video tokens equal core.retained_count; the LLM sequence is text + kept tokens."""
    for r in report["results"]:
        rate = 0.0 if r["method"] == "none" else r["rate"]
        want = retained_count(r["tokens_per_frame"], r["temporal_slices"], rate)
        assert r["tokens_video_kept"] == want
        assert r["tokens_llm"] == want + (r_text := TINY["prompt_tokens"] + 2)
        assert r_text > 0


def test_kv_cache_bytes_are_proportional_to_llm_tokens(report):
    """KV bytes after prefill = tokens_llm x layers x 2 x kv_heads x head_dim x 4 bytes, exactly."""
    t = scale_config(ARCHITECTURES["qwen2.5-vl-3b"], TINY["scale"])["text_config"]
    per_token = t["num_hidden_layers"] * 2 * t["num_key_value_heads"] * t["head_dim"] * 4
    for r in report["results"]:
        assert r["kv_cache_bytes"] == r["tokens_llm"] * per_token


def test_kv_cache_bytes_reads_dynamic_cache():
    """kv_cache_bytes sums the key and value tensors of every layer."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.update(torch.zeros(1, 2, 5, 8), torch.zeros(1, 2, 5, 8), 0)
    cache.update(torch.zeros(1, 2, 5, 8), torch.zeros(1, 2, 5, 8), 1)
    assert kv_cache_bytes(cache) == 4 * 2 * 5 * 8 * 4


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_named_architecture_builds_scaled(name):
    """Each embedded config builds a random model at a small scale with the real patch geometry."""
    arch = scale_config(ARCHITECTURES[name], 0.03)
    model = build_model(arch)
    assert model.config.model_type == ARCHITECTURES[name]["model_type"]
    assert arch["vision_config"]["patch_size"] == ARCHITECTURES[name]["vision_config"]["patch_size"]


def test_bad_settings_raise_naming_the_field():
    """Unknown methods, rates out of range and unsupported method/family pairs are errors."""
    with pytest.raises(ValueError, match="method"):
        SpeedConfig(method="evs,magic")
    with pytest.raises(ValueError, match="rates"):
        SpeedConfig(rates="0,1.0")
    with pytest.raises(ValueError, match="evs-pre"):
        run_speed(SpeedConfig(**dict(TINY, model="llava-onevision-7b")), progress=False)
    assert "stts" not in METHODS or callable(METHODS["stts"].apply)
