"""The ``videoprune`` block's validation and placeholder counts (no vLLM needed: videoprune.vllm.config)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from videoprune.config import EVSConfig
from videoprune.core.evs import retained_count
from videoprune.models.stts_qwen2_5_vl import scorer_fingerprint
from videoprune.vllm.config import check_vllm_version, kept_tokens, parse_block


@pytest.mark.parametrize("block, field", [
    ({"method": "fastv", "rate": 0.5}, "videoprune.method:"),
    ({"rate": 0.5}, "videoprune.method:"),
    ({"method": "evs-threshold", "rate": 0.5}, "videoprune.method:"),
    ({"method": "evs", "rate": 1.0}, "videoprune.rate:"),
    ({"method": "evs", "rate": -0.1}, "videoprune.rate:"),
    ({"method": "evs", "rate": True}, "videoprune.rate:"),
    ({"method": "evs"}, "videoprune.rate:"),
    ({"method": "evs", "threshold": 0.2}, "videoprune.threshold:"),
    ({"method": "evs", "rate": 0.5, "ratio": 0.5}, "videoprune.ratio:"),
    ({"method": "evs", "rate": 0.5, "scorer_path": "x"}, "videoprune.scorer_path:"),
    ({"method": "stts", "rate": 0.5}, "videoprune.scorer_path:"),
    ({"method": "stts", "rate": 0.5, "scorer_path": "/nonexistent.safetensors"}, "videoprune.scorer_path:"),
    ("{not json", "videoprune:"),
    (["evs"], "videoprune:"),
])
def test_bad_blocks_name_the_field_in_one_line(block, field):
    """A bad block raises one line that starts with the field it names."""
    with pytest.raises(ValueError) as e:
        parse_block(block, "qwen2_5_vl")
    assert str(e.value).startswith(field) and "\n" not in str(e.value)


def test_threshold_refusal_says_why():
    """Threshold mode is refused with the reason: placeholders are sized before features exist."""
    with pytest.raises(ValueError, match="placeholders .* before any features exist"):
        parse_block({"method": "evs-pre", "threshold": 0.1}, "qwen2_5_vl")


@pytest.mark.parametrize("model_type", ["qwen3_vl", "llava_onevision", "llama"])
def test_uncovered_family_fails(model_type):
    """A block on a family the plug-in does not cover fails, naming the model_type."""
    with pytest.raises(ValueError, match=f"videoprune.method: model_type '{model_type}' is not covered"):
        parse_block({"method": "evs", "rate": 0.5}, model_type)


@pytest.mark.parametrize("method", ["evs", "evs-pre"])
def test_qwen2_vl_serves_evs_and_evs_pre(method):
    """Qwen2-VL takes evs and evs-pre blocks."""
    got = parse_block({"method": method, "rate": 0.5}, "qwen2_vl")
    assert (got.method, got.rate) == (method, 0.5)


def test_qwen2_vl_refuses_stts_naming_the_family():
    """STTS has no Qwen2-VL integration (the HF side's families), so its block fails before the scorer is read."""
    from videoprune.methods import get_method

    assert "qwen2_vl" not in get_method("stts").families()
    with pytest.raises(ValueError, match=r"^videoprune.method: 'stts' is not available for qwen2_vl in vLLM; "
                                         r"it offers evs, evs-pre$"):
        parse_block({"method": "stts", "rate": 0.5, "scorer_path": "/nonexistent.safetensors"}, "qwen2_vl")


def test_blocks_map_to_the_methods_table_configs():
    """A block maps to the config the shared methods table gives the HF patch for the same method and rate."""
    evs = parse_block({"method": "evs", "rate": 0.75}, "qwen2_5_vl")
    assert evs.config == EVSConfig(rate=0.75)
    pre = parse_block('{"method": "evs-pre", "rate": 0.5}', "qwen2_5_vl")  # JSON text, as a CLI may pass
    assert pre.config.stage == "pre_encoder" and pre.config.criterion == "pixel" and pre.rate == 0.5


def test_placeholder_counts_follow_shapes_and_rate():
    """The kept token count comes from the grid and the rate alone (frame 0 always fits)."""
    evs = parse_block({"method": "evs", "rate": 0.75}, "qwen2_5_vl")
    assert kept_tokens(evs, (8, 16, 16), 2) == retained_count(64, 8, 0.75) == 128
    assert kept_tokens(evs, (2, 16, 16), 2) == 64  # frame 0 always fits
    stts = SimpleNamespace(method="stts", rate=0.5)
    assert kept_tokens(stts, (4, 8, 8), 2) == 64 - 32


def test_vllm_version_range():
    """vLLM 0.32.x is accepted; other versions fail naming the version unless untested ones are allowed."""
    check_vllm_version("0.32.0")
    check_vllm_version("0.32.3")
    for v in ("0.31.9", "0.33.0"):
        with pytest.raises(ValueError, match=f"vllm version {v} is outside"):
            check_vllm_version(v)
    check_vllm_version("0.33.0", allow_untested=True)


def test_stts_fingerprint_matches_the_hf_integration(tmp_path):
    """A scorer saved by ``handle.save_scorer`` is accepted, and its settings come from the file."""
    pytest.importorskip("transformers")
    import videoprune
    from videoprune.stts import STTSConfig
    from videoprune.train.tiny import tiny_model
    from videoprune.train.tokenizer import build_word_tokenizer

    model = tiny_model("tiny:qwen2_5_vl", build_word_tokenizer())
    handle = videoprune.patch(model, STTSConfig(ratio=0.5, prune_at=1, mlp_hidden=16, attn_dim=8))
    path = str(tmp_path / "s.safetensors")
    handle.save_scorer(path)
    vc = model.config.vision_config
    assert handle.fingerprint_fields == scorer_fingerprint(vc, 1, 2)
    handle.remove()
    got = parse_block({"method": "stts", "rate": 0.25, "scorer_path": path}, "qwen2_5_vl", vc)
    assert (got.config.ratio, got.config.prune_at, got.config.mlp_hidden, got.config.attn_dim) == (0.25, 1, 16, 8)
    wider = type(vc)(**{**vc.to_dict(), "hidden_size": 64})
    with pytest.raises(ValueError, match=r"videoprune.scorer_path: .* does not match this checkpoint \(.*hidden_size"):
        parse_block({"method": "stts", "rate": 0.25, "scorer_path": path}, "qwen2_5_vl", wider)


def test_every_served_architecture_is_registered_and_maps_to_its_model_type():
    """register() replaces exactly the served classes; FAMILIES gives each its model_type and HF-side methods.

    A tripwire too: the plug-in's STTS drives Qwen2.5-VL's tower and scorer fingerprint only, so when the HF
    side adds STTS for Qwen2-VL this fails, and the vLLM side needs its tower (and fingerprint) first.
    """
    from videoprune.vllm import ARCHITECTURES
    from videoprune.vllm.config import FAMILIES, SERVED
    from videoprune.vllm.tiny_checkpoint import ARCHITECTURES as TINY

    assert set(ARCHITECTURES) == set(SERVED) == set(TINY)
    assert dict(FAMILIES) == {"qwen2_5_vl": ("evs", "evs-pre", "stts"), "qwen2_vl": ("evs", "evs-pre")}
