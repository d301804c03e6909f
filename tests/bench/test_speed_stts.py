"""`videoprune bench speed --method stts` on tiny scaled Molmo2 / Qwen2.5-VL: fields and STTS token counts."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from videoprune.bench.configs import ARCHITECTURES, scale_config  # noqa: E402
from videoprune.bench.speed import SpeedConfig, run_speed, stts_prune_at  # noqa: E402

FRAMES = (3, 4)
PROMPT = 6
MOLMO2_TOKENS_PER_FRAME = 81  # 378 px / 14 px patches = 27 x 27, pooled 3 x 3 -> 9 x 9
MOLMO2_FRAME_TEXT = 3 + 2  # synthetic timestamp text + <frame_start> + <frame_end> around each frame
TINY = dict(scale=0.03, frames=",".join(map(str, FRAMES)), rates="0,0.5", method="stts", repeats=1, warmup=0,
            decode_tokens=2, video="random", prompt_tokens=PROMPT)


def stts_kept(tokens_per_frame: int, frames: int, ratio: float) -> int:
    """Explicit STTS budget: frame 0 whole, then the global top-k over frames 1..T-1 per video."""
    total = tokens_per_frame * frames
    k = total - int(ratio * total) - tokens_per_frame  # top-k size among the later frames
    assert 0 <= k <= tokens_per_frame * (frames - 1)
    return tokens_per_frame + k


@pytest.fixture(scope="module")
def molmo2(tmp_path_factory):
    out = tmp_path_factory.mktemp("stts") / "m"
    return run_speed(SpeedConfig(model="molmo2-8b", out=str(out), **TINY), progress=False)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    out = tmp_path_factory.mktemp("stts") / "q"
    return run_speed(SpeedConfig(model="qwen2.5-vl-3b", max_pixels=56 * 56 * 2, out=str(out), **TINY), progress=False)


def test_molmo2_stts_settings_and_fields(molmo2):
    """Per frame count: the baseline plus stts at each rate, each with encoder_llm_s = vision + selection + prefill."""
    res = molmo2["results"]
    assert [(r["method"], r["rate"], r["frames"]) for r in res] == [
        (m, q, f) for f in FRAMES for m, q in (("none", 0.0), ("stts", 0.0), ("stts", 0.5))]
    for r in res:
        assert r["encoder_llm_s"] == pytest.approx(r["vision_s"] + r["selection_s"] + r["llm_prefill_s"])
        assert r["encoder_llm_s"] > 0 and r["encoder_llm_speedup"] > 0 and r["ttft_s"] > 0
        assert r["tokens_per_frame"] == MOLMO2_TOKENS_PER_FRAME
        lo, hi = r["speedup_paired"]["encoder_llm_speedup"]
        assert lo <= hi and len(r["samples"]["encoder_llm_s"]) == TINY["repeats"]
    base = [r for r in res if r["method"] == "none"]
    assert all(b["speedup_paired"]["encoder_llm_speedup"] == [1.0, 1.0] for b in base)
    json.dumps(molmo2)


def test_molmo2_stts_token_counts(molmo2):
    """tokens_llm is the text plus the STTS kept count; ratio 0 (and the unpatched model) keep every token."""
    for r in molmo2["results"]:
        t = r["frames"]
        text = PROMPT + MOLMO2_FRAME_TEXT * t
        want = stts_kept(MOLMO2_TOKENS_PER_FRAME, t, r["rate"]) if r["method"] == "stts" else t * MOLMO2_TOKENS_PER_FRAME
        assert r["tokens_video_kept"] == want
        assert r["tokens_llm"] == text + want
        if r["rate"] == 0:
            assert r["tokens_llm"] == text + t * MOLMO2_TOKENS_PER_FRAME
    half = [r for r in molmo2["results"] if r["rate"] == 0.5]
    assert [r["tokens_video_kept"] for r in half] == [122, 162]  # 243 - int(121.5), 324 / 2


def test_molmo2_kv_cache_follows_kept_tokens(molmo2):
    """KV bytes after prefill = tokens_llm x layers x 2 x kv_heads x head_dim x 4 bytes."""
    t = scale_config(ARCHITECTURES["molmo2-8b"], TINY["scale"])["text_config"]
    per_token = t["num_hidden_layers"] * 2 * t["num_key_value_heads"] * t["head_dim"] * 4
    for r in molmo2["results"]:
        assert r["kv_cache_bytes"] == r["tokens_llm"] * per_token


def test_qwen2_5_vl_stts_token_counts(qwen):
    """On Qwen2.5-VL one STTS frame is a temporal slice: kept = slice 0 whole + global top-k."""
    for r in qwen["results"]:
        n, tpf = r["temporal_slices"], r["tokens_per_frame"]
        want = stts_kept(tpf, n, r["rate"]) if r["method"] == "stts" else n * tpf
        assert r["tokens_video_kept"] == want
        assert r["tokens_llm"] == PROMPT + 2 + want  # <vision_start> ... <vision_end>
        assert r["encoder_llm_s"] == pytest.approx(r["vision_s"] + r["selection_s"] + r["llm_prefill_s"])
    assert any(r["rate"] == 0.5 and r["tokens_video_kept"] < r["tokens_video"] for r in qwen["results"])


@pytest.mark.parametrize("depth, want", [(25, 3), (12, 1), (6, 0), (3, 0), (2, 0), (32, 4)])
def test_stts_prune_at_keeps_the_papers_relative_depth(depth, want):
    """prune_at = round(4 * depth / 25) - 1, clamped to [0, depth - 2]: block 3 of Molmo2's 25 at full size."""

    class C:  # the two config fields stts_prune_at reads
        model_type = "qwen2_5_vl"

        class vision_config:  # noqa: N801
            pass

    C.vision_config.depth = depth

    class M:
        config = C

    assert stts_prune_at(M) == want


def test_stts_rejects_unsupported_family():
    """stts names the families it supports when asked for another one."""
    with pytest.raises(ValueError, match="molmo2"):
        run_speed(SpeedConfig(**dict(TINY, model="qwen2-vl-7b")), progress=False)
