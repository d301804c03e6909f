"""`videoprune ask`: answers, honest token counts and TTFT with and without pruning, one-line errors."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("transformers")
pytest.importorskip("av")

from videoprune.ask import AskConfig, ask, format_answer  # noqa: E402
from videoprune.cli import main  # noqa: E402
from videoprune.core.evs import retained_count  # noqa: E402
from videoprune.data.synthetic import write_dataset  # noqa: E402

SLICES, TOKENS_PER_SLICE = 6, 16  # 12 frames of 112 px


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    jsonl = write_dataset(out, "test", 1, seed=9, num_frames=12, progress=False)
    rec = json.loads(jsonl.read_text().splitlines()[0])
    return str(out / rec["video"]), rec["question"]


@pytest.mark.parametrize("method", ["evs", "evs-pixel", "evs-pre", "random"])
def test_ask_reports_the_evs_budget_and_both_ttfts(tiny_bundle, clip, method):
    """Kept tokens follow retained_count, frame 0 whole; both TTFTs are measured."""
    r = ask(*clip, AskConfig(model=tiny_bundle, method=method, rate=0.5, timing_runs=1, max_new_tokens=2))
    assert r.tokens_before == SLICES * TOKENS_PER_SLICE
    assert r.tokens_after == retained_count(TOKENS_PER_SLICE, SLICES, 0.5)
    assert r.kept_per_frame[0] == TOKENS_PER_SLICE and sum(r.kept_per_frame) == r.tokens_after
    assert r.ttft_unpruned_s > 0 and r.ttft_pruned_s > 0
    assert isinstance(r.answer, str) and "answer" in format_answer(r)


def test_ask_at_rate_zero_gives_the_unpruned_answer(tiny_bundle, clip):
    """Rate 0 keeps every token, so the answer equals the unpruned one."""
    r = ask(*clip, AskConfig(model=tiny_bundle, rate=0.0, timing_runs=1, max_new_tokens=3))
    assert r.tokens_after == r.tokens_before and r.answer == r.answer_unpruned


def test_ask_cli_prints_json(tiny_bundle, clip, capsys):
    """The CLI prints one JSON object with the answer and both TTFTs."""
    assert main(["ask", *clip, "--model", tiny_bundle, "--rate", "0.75", "--timing-runs", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"answer", "tokens_before", "tokens_after", "ttft_unpruned_s", "ttft_pruned_s", "ttft_speedup"} <= set(out)
    assert out["tokens_after"] == retained_count(TOKENS_PER_SLICE, SLICES, 0.75)


@pytest.mark.parametrize(
    "args, match",
    [
        (["/nonexistent.mp4", "q ?"], "videoprune ask: error:"),
        (["{clip}", "q ?", "--rate", "1.5"], "rate"),
        (["{clip}", "q ?", "--rate", "0.5", "--threshold", "0.1"], "not both"),
    ],
)
def test_ask_bad_input_is_one_line(tiny_bundle, clip, capsys, args, match):
    """A missing video, a rate outside [0, 1) or both rate and threshold exit 1 with a one-line error and no traceback.
    """
    args = [a.replace("{clip}", clip[0]) for a in args]
    assert main(["ask", *args, "--model", tiny_bundle]) == 1
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err and "Traceback" not in err


EXPORTED_RATE = 0.5


@pytest.fixture(scope="module")
def export(tiny_bundle, tmp_path_factory):
    """The tiny model as `videoprune train` exports it: config.json records the serving rate."""
    import shutil

    path = tmp_path_factory.mktemp("export") / "export"
    shutil.copytree(tiny_bundle, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "video_pruning_rate": EXPORTED_RATE}))
    return str(path)


def test_an_export_is_pruned_at_its_recorded_rate(export, clip):
    """With no --rate, ask prunes at the video_pruning_rate the export's config records, and says that is where the rate
    came from."""
    r = ask(*clip, AskConfig(model=export, timing_runs=1, max_new_tokens=1))
    assert (r.rate, r.rate_source) == (EXPORTED_RATE, "model config")
    assert r.tokens_after == retained_count(TOKENS_PER_SLICE, SLICES, EXPORTED_RATE)


def test_a_given_rate_overrides_the_recorded_one(export, clip):
    """A rate given by the user wins over the export's recorded rate and sets the kept-token budget."""
    r = ask(*clip, AskConfig(model=export, rate=0.75, timing_runs=1, max_new_tokens=1))
    assert (r.rate, r.rate_source) == (0.75, "given")
    assert r.tokens_after == retained_count(TOKENS_PER_SLICE, SLICES, 0.75)


def test_ttft_runs_are_timed_interleaved_per_setting(tiny_bundle, clip):
    """Each setting gets exactly timing_runs TTFT measurements, and the thread count is reported."""
    r = ask(*clip, AskConfig(model=tiny_bundle, timing_runs=3, max_new_tokens=1))
    assert len(r.ttft_unpruned_runs_s) == len(r.ttft_pruned_runs_s) == 3 and r.threads >= 1


def result(tokens: int, unpruned_ms: list[float], pruned_ms: list[float]):
    from videoprune.ask import AskResult

    u, p = [t / 1e3 for t in unpruned_ms], [t / 1e3 for t in pruned_ms]
    return AskResult("a", "a", tokens, tokens // 4, [tokens // 4], sorted(u)[len(u) // 2], sorted(p)[len(p) // 2],
                     "evs", "m", 0.75, "given", u, p, 4)


def test_small_videos_say_ttft_measures_overhead_with_spread_and_threads():
    """At a few hundred video tokens the answer shows median, range and threads, and states that TTFT measures per-call
    overhead instead of printing a speed-up ratio."""
    text = format_answer(result(128, [20, 22, 30], [19, 21, 40]))
    assert "22.0 ms (20.0-30.0) unpruned -> 21.0 ms (19.0-40.0) pruned" in text and "4 threads" in text
    assert "at 128 video tokens this measures per-call overhead, not pruning" in text
    assert re.search(r"\d\.\d+x", text) is None  # no ratio


def test_overlapping_ranges_give_no_ratio():
    """When the unpruned and pruned TTFT ranges overlap, no ratio is printed: the difference is not measurable."""
    text = format_answer(result(4096, [200, 220, 300], [190, 210, 250]))
    assert "no TTFT difference measurable" in text and re.search(r"\d\.\d+x", text) is None


def test_separate_ranges_give_the_ratio_of_medians():
    """When the TTFT ranges do not overlap, the speed-up is printed as the ratio of the two medians."""
    text = format_answer(result(4096, [400, 420, 450], [100, 105, 110]))
    assert "4.00x (unpruned median / pruned median" in text
