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
sys.path.insert(0, str(Path(__file__).parents[1] / "video"))

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


# ---------------------------------------------------------------------------------------------
# requests that cannot fit are refused before any work
# ---------------------------------------------------------------------------------------------
LONG_FRAMES = 300  # 112 px frames: 8 LLM tokens each, 2400 in all > the tiny QA model's 1024 positions


def _no_decode(*args, **kwargs):
    raise AssertionError("a frame was decoded for a request that should have been refused")


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    pytest.importorskip("av")
    import clips

    frames = clips.moving_bar_frames(LONG_FRAMES, 112, 112)
    return clips.write_clip(tmp_path_factory.mktemp("long") / "long.mp4", frames)


def test_ask_refuses_more_video_tokens_than_the_context_before_decoding(tiny_bundle, long_clip, monkeypatch):
    """ask counts the video's tokens from its header and refuses past max_position_embeddings, decoding nothing."""
    from videoprune.ask import AskConfig, ask

    monkeypatch.setattr("videoprune.video.prompt.decode", _no_decode)
    with pytest.raises(ValueError) as e:
        ask(long_clip, "what moves?", AskConfig(model=tiny_bundle, num_frames=LONG_FRAMES, timing_runs=1))
    msg = str(e.value)
    assert msg.startswith("the request does not fit the model's context: 300 frames of 112x112 -> 2400 video tokens "
                          "+ 8 new tokens = 2408 > 1024")
    assert "at most 126 frames fit" in msg


def test_ask_cli_reports_the_context_overflow_in_one_line(tiny_bundle, long_clip, capsys):
    """When a video has more tokens than the model's context, `videoprune ask` exits 1 with a one-line error saying the
    request does not fit, no traceback."""
    from videoprune.cli import main

    code = main(["ask", long_clip, "what moves?", "--model", tiny_bundle, "--num-frames", str(LONG_FRAMES)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("videoprune ask: error: the request does not fit the model's context")


def test_analyze_refuses_an_estimate_above_the_memory_limit_before_decoding(long_clip, monkeypatch, tmp_path):
    """analyze estimates decoded + preprocessed bytes from the header and refuses past --max-memory-mb."""
    from videoprune.video import SamplingConfig, VideoLimits
    from videoprune.video.analyze import AnalyzeConfig, analyze

    monkeypatch.setattr("videoprune.video.analyze.decode", _no_decode)
    with pytest.raises(ValueError, match=r"long.mp4: analyzing 300 frames of 112x112 needs about [\d,]+ MiB, more "
                                         r"than the limit of 64 MiB \(--max-memory-mb\); sample fewer frames"):
        analyze(long_clip, AnalyzeConfig(out=str(tmp_path)), SamplingConfig(num_frames=300, max_frames=300),
                VideoLimits(max_memory_mb=64))


def test_decode_refuses_frames_above_the_memory_limit(long_clip):
    """decode refuses a request whose frames would exceed VideoLimits.max_memory_mb, naming the size needed and the
    limit, before decoding."""
    from videoprune.video import SamplingConfig, VideoLimits, decode

    with pytest.raises(ValueError, match="decoding 300 frames of 112x112 needs about 11 MiB, more than the limit of 1 MiB"):
        decode(long_clip, SamplingConfig(num_frames=300, max_frames=300), VideoLimits(max_memory_mb=1))


def test_an_explicit_frame_count_above_max_frames_is_refused_not_capped():
    """An explicit num_frames above max_frames is refused with the flag to raise, never silently capped to fewer frames.
    """
    from videoprune.video import SamplingConfig

    with pytest.raises(ValueError, match=r"num_frames=5000 is more than max_frames=32; raise max_frames "
                                         r"\(--max-frames 5000\)"):
        SamplingConfig(num_frames=5000)


def test_contact_sheet_draws_at_most_64_frames_and_says_so(tmp_path):
    """A clip of 80 sampled frames: the sheet shows 64 evenly spaced; the report notes it; counts cover all 80."""
    import clips
    from PIL import Image

    from videoprune.video import clip_from_frames
    from videoprune.video.analyze import MAX_SHEET_FRAMES, analyze_clip, format_summary, render_contact_sheet

    clip = clip_from_frames(clips.moving_bar_frames(80, 56, 56), fps=10.0)
    report = analyze_clip(clip)
    png = render_contact_sheet(clip, report, str(tmp_path / "sheet.png"))
    assert report.frames == 80 and len(report.kept_per_frame) == 40
    assert report.notes == [f"contact sheet shows {MAX_SHEET_FRAMES} of 80 sampled frames, evenly spaced (at most "
                            f"{MAX_SHEET_FRAMES} tiles, to bound its size); the counts cover all frames"]
    assert "note         contact sheet shows 64 of 80" in format_summary(report)
    with Image.open(png) as im:
        assert im.height < 5000  # 11 rows of 6 tiles (4325 px), not the 14 rows of all 80 (5420 px)


# ---------------------------------------------------------------------------------------------
# bad files: one line naming the file and the cause
# ---------------------------------------------------------------------------------------------
SCORER_FIELDS = {"model_type": "x"}
SCORER_ARCH = {"width": 4}


def _scorer_file(tmp_path, kind: str) -> str:
    from videoprune.stts.weights import save_scorer_state

    good = tmp_path / "good.safetensors"
    save_scorer_state(str(good), {"w": torch.ones(64, 64)}, SCORER_FIELDS, SCORER_ARCH)
    path = tmp_path / f"{kind}.safetensors"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:-100])
    elif kind == "garbage":
        path.write_bytes(b"this is not a safetensors file")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    return str(path)


@pytest.mark.parametrize(("kind", "message"), [
    ("truncated", "scorer file is corrupt: {path} ("),
    ("garbage", "scorer file is corrupt: {path} ("),
    ("empty", "scorer file is corrupt: {path} ("),
    ("missing", "scorer file not found: {path}"),
    ("directory", "not a regular file: {path} (a directory)"),
])
def test_bad_scorer_files_raise_one_line_value_errors(tmp_path, kind, message):
    """A truncated, garbage, empty, missing or directory STTS scorer file raises a one-line ValueError naming the path
    and what is wrong with it."""
    from videoprune.stts.weights import load_scorer_state

    path = _scorer_file(tmp_path, kind)
    with pytest.raises(ValueError) as e:
        load_scorer_state(path, SCORER_FIELDS, SCORER_ARCH)
    assert str(e.value).startswith(message.format(path=path)) and "\n" not in str(e.value)


@pytest.mark.parametrize(("kind", "message"), [("missing", "scorer file not found: {path}"),
                                               ("directory", "not a regular file: {path} (a directory)")])
def test_patch_reports_a_bad_scorer_path_before_checking_the_settings(tmp_path, kind, message):
    """STTSConfig's default prune_at does not fit the tiny Molmo2; the file problem is what gets reported."""
    path = _scorer_file(tmp_path, kind)
    model = stts_builders.build_molmo2()
    with pytest.raises(ValueError) as e:
        videoprune.patch(model, videoprune.STTSConfig(ratio=0.5, scorer_path=path))
    assert str(e.value) == message.format(path=path)
    assert not hasattr(model, "_videoprune_handle")


def test_bundle_resolves_a_missing_scorer_path_to_a_not_found_error(tiny_bundle, tmp_path):
    """ask --method stts --scorer PATH: a missing path is named as such, not as a prune_at problem."""
    from videoprune.bundle import ModelBundle

    bundle = ModelBundle(model=None, tokenizer=None, family="qwen2_5_vl", path=tiny_bundle)
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match=f"^scorer file not found: {missing}$"):
        bundle.stts_config(0.5, missing)
    with pytest.raises(ValueError, match=f"^not a regular file: {tmp_path} \\(a directory\\)$"):
        bundle.stts_config(0.5, str(tmp_path))


def test_a_fifo_is_refused_as_a_video_without_opening_it(tmp_path):
    """Opening a FIFO would block until a writer comes; it is refused from its file type."""
    import os

    from videoprune.video import probe

    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=f"^not a regular file: {fifo} \\(a FIFO\\)$"):
        probe(fifo)


def test_dev_zero_is_refused_as_a_video():
    """A character device such as /dev/zero is refused as a video (not a regular file) instead of being read forever."""
    from videoprune.video import decode

    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    with pytest.raises(ValueError, match=r"^not a regular file: /dev/zero \(a character device\)$"):
        decode("/dev/zero")


def test_a_directory_is_refused_as_a_video_by_the_cli(tmp_path, capsys):
    """`videoprune analyze` on a directory exits 1 with exactly one line: not a regular file, a directory."""
    from videoprune.cli import main

    assert main(["analyze", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.strip() == f"videoprune analyze: error: not a regular file: {tmp_path} (a directory)"


# ---------------------------------------------------------------------------------------------
# bad settings: one validator per parameter, the same message everywhere
# ---------------------------------------------------------------------------------------------
THRESHOLD_MESSAGE = "threshold must be a finite float >= 0"
GRID = (4, 4, 4)  # 4 slices of 2x2 merged tokens


def _features(requires_grad=False):
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    return x.requires_grad_(requires_grad)


def _pixels(requires_grad=False):
    x = torch.randn(64, 12, generator=torch.Generator().manual_seed(1))
    return x.requires_grad_(requires_grad)


NEGATIVE_THRESHOLD = {
    "EVSConfig": lambda: EVSConfig(threshold=-0.1),
    "threshold_mask": lambda: videoprune.core.threshold_mask(_features(), GRID, 2, -0.1),
    "select_by_threshold": lambda: videoprune.core.evs.select_by_threshold(torch.zeros(16), GRID, 2, -0.1),
    "pixel_retention_mask": lambda: videoprune.core.pixel_retention_mask(_pixels(), GRID, 2, threshold=-0.1),
    "AskConfig": lambda: __import__("videoprune.ask", fromlist=["AskConfig"]).AskConfig(threshold=-0.1),
    "AnalyzeConfig": lambda: __import__("videoprune.video.analyze", fromlist=["x"]).AnalyzeConfig(threshold=-0.1),
}


@pytest.mark.parametrize("where", list(NEGATIVE_THRESHOLD))
def test_a_negative_threshold_is_refused_everywhere_with_one_message(where):
    """A negative threshold is refused with the same message by every config and core function that takes one."""
    with pytest.raises(ValueError, match=THRESHOLD_MESSAGE):
        NEGATIVE_THRESHOLD[where]()


@pytest.mark.parametrize("argv", [["--threshold", "-0.1"], ["--num-frames", "0"], ["--num-frames", "-3"]])
def test_ask_cli_refuses_bad_settings_before_loading_a_model(argv, capsys, monkeypatch):
    """`videoprune ask` refuses a negative threshold or a frame count below 1 in one line before any model is loaded."""
    from videoprune.cli import main

    monkeypatch.setattr("videoprune.bundle.load_bundle", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["ask", "clip.mp4", "q?", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("videoprune ask: error: ") and "\n" not in err
    assert (THRESHOLD_MESSAGE if argv[0] == "--threshold" else "num_frames must be an int in [1, 10000]") in err


def test_num_frames_zero_is_an_error_not_the_default():
    """num_frames=0 is an error in AskConfig and ModelBundle.sampling, not a silent fallback to the default; only None
    means the bundle's default."""
    from videoprune.ask import AskConfig
    from videoprune.bundle import ModelBundle

    with pytest.raises(ValueError, match=r"num_frames must be an int in \[1, 10000\], got 0"):
        AskConfig(num_frames=0)
    bundle = ModelBundle(model=None, tokenizer=None, family="qwen2_5_vl", path="x", num_frames=16)
    with pytest.raises(ValueError, match="num_frames must be an int >= 1, got 0"):
        bundle.sampling(0)
    assert bundle.sampling(None).num_frames == 16 and bundle.sampling(40).num_frames == 40


def test_min_pixels_above_max_pixels_is_refused():
    """min_pixels above max_pixels is refused with the same message by ModelBundle and by preprocess."""
    from videoprune.bundle import ModelBundle
    from videoprune.video import clip_from_frames, preprocess

    message = r"min_pixels \(20000\) must not exceed max_pixels \(10000\)"
    with pytest.raises(ValueError, match=message):
        ModelBundle(model=None, tokenizer=None, family="qwen2_5_vl", path="x", min_pixels=20000, max_pixels=10000)
    clip = clip_from_frames(torch.zeros(2, 28, 28, 3, dtype=torch.uint8).numpy())
    with pytest.raises(ValueError, match=message):
        preprocess(clip, "qwen2_vl", min_pixels=20000, max_pixels=10000)


@pytest.mark.parametrize("rate", [-0.1, 1.0, float("nan")])
def test_rate_outside_0_1_is_refused_with_one_message(rate):
    """A rate of -0.1, 1.0 or NaN is refused with the same message by EVSConfig, AskConfig, AnalyzeConfig and
    core.retention_mask."""
    from videoprune.ask import AskConfig
    from videoprune.video.analyze import AnalyzeConfig

    for make in (lambda: EVSConfig(rate=rate), lambda: AskConfig(rate=rate), lambda: AnalyzeConfig(rate=rate),
                 lambda: videoprune.core.retention_mask(_features(), GRID, 2, rate)):
        with pytest.raises(ValueError, match=r"rate must be in \[0, 1\), got"):
            make()


# ---------------------------------------------------------------------------------------------
# autograd: selection is not differentiable; inputs that require grad are accepted (detached)
# ---------------------------------------------------------------------------------------------
AUTOGRAD = {
    "retention_mask": lambda grad: videoprune.core.retention_mask(_features(grad), GRID, 2, 0.5),
    "threshold_mask": lambda grad: videoprune.core.threshold_mask(_features(grad), GRID, 2, 0.5),
    "pixel_retention_mask": lambda grad: videoprune.core.pixel_retention_mask(_pixels(grad), GRID, 2, rate=0.5),
    "embedding_dissimilarity": lambda grad: videoprune.core.embedding_dissimilarity(_features(grad), GRID, 2),
    "pixel_dissimilarity": lambda grad: videoprune.core.pixel_dissimilarity(_pixels(grad), GRID, 2),
}


@pytest.mark.parametrize("fn", list(AUTOGRAD))
def test_inputs_that_require_grad_give_the_detached_result(fn):
    """Every core selection and dissimilarity function gives the same result, detached, whether or not its input
    requires grad."""
    out = AUTOGRAD[fn](True)
    assert torch.equal(out, AUTOGRAD[fn](False)) and not out.requires_grad
