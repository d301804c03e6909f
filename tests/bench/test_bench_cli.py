"""`videoprune bench speed|accuracy` from the command line: where outputs go, what is printed."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from videoprune.cli import main  # noqa: E402

SPEED_ARGS = ["bench", "speed", "--model", "qwen2.5-vl-3b", "--scale", "0.03", "--frames", "4", "--rates", "0,0.5",
              "--method", "evs", "--repeats", "1", "--warmup", "0", "--decode-tokens", "2", "--video", "random",
              "--max-pixels", str(56 * 56 * 2), "--prompt-tokens", "6"]
ACC_NUM = 4


def _run(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `videoprune ARGV` run in ``cwd``."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    finally:
        os.chdir(old)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def speed_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cwd")
    (cwd / "benchmarks" / "results").mkdir(parents=True)
    rc, out, err = _run(SPEED_ARGS, cwd)
    assert rc == 0, err
    return cwd, out, err


@pytest.fixture(scope="module")
def accuracy_run(tmp_path_factory, tiny_bundle):
    pytest.importorskip("av")
    cwd = tmp_path_factory.mktemp("cwd")
    rc, out, err = _run(["bench", "accuracy", "--model", tiny_bundle, "--uptrained", "none", "--stts-scorer", "none",
                         "--methods", "none,evs,evs-threshold", "--fractions", "1,0.5", "--num", str(ACC_NUM),
                         "--batch-size", "4"], cwd)
    assert rc == 0, err
    return cwd, out, err


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("run, bench", [("speed_run", "speed"), ("accuracy_run", "accuracy")])
def test_default_outputs_go_to_a_fresh_folder_under_videoprune_out(request, run, bench):
    """Without --out everything lands in ./videoprune-out/BENCH-<time>/, whose path is printed; nothing else is written."""
    cwd, out, _ = request.getfixturevalue(run)
    folders = list((cwd / "videoprune-out").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith(f"{bench}-")
    assert (folders[0] / f"{bench}.json").is_file() and (folders[0] / f"{bench}.png").is_file()
    assert sorted(p.name for p in cwd.iterdir() if p.name != "benchmarks") == ["videoprune-out"]
    assert not any((cwd / "benchmarks").rglob("*.*"))
    assert f"videoprune-out/{folders[0].name}/{bench}.json" in out.splitlines()[-2]


@pytest.mark.parametrize("run", ["speed_run", "accuracy_run"])
def test_last_stdout_line_is_a_compact_json_pointing_at_the_full_report(request, run):
    """The last line has one flat entry (numbers and names only) per result; the nested detail
    (per-repeat samples and spreads, per-type accuracy) is in the full report the line names."""
    cwd, out, _ = request.getfixturevalue(run)
    line = _last_json(out)
    full = json.loads((cwd / line["report"]).read_text())
    assert len(line["results"]) == len(full["results"]) > 0
    detail = "samples" if run == "speed_run" else "per_type"
    assert all(detail in r for r in full["results"])
    assert all(not isinstance(v, (dict, list)) for r in line["results"] for v in r.values())
    assert len(out.strip().splitlines()[-1]) < len(json.dumps(full))


def test_speed_warns_once_on_stderr_that_ratios_are_noise_and_records_it(speed_run):
    """--warmup 0 --repeats 1: one stderr line, and the same text in the report's and the summary's warnings."""
    cwd, out, err = speed_run
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(lines) == 1 and "noise" in lines[0]
    line = _last_json(out)
    full = json.loads((cwd / line["report"]).read_text())
    assert full["warnings"] == line["warnings"] and line["warnings"][0] in lines[0]


def test_accuracy_calibrates_on_at_most_num_clips_and_says_so(accuracy_run):
    """--num 4 without --calibration-num calibrates evs-threshold on 4 val clips: generated, reported, printed."""
    cwd, out, _ = accuracy_run
    line = _last_json(out)
    assert line["calibration_num"] == ACC_NUM
    report = cwd / line["report"]
    assert len((report.parent / "data" / "val-seed0" / "val.jsonl").read_text().splitlines()) == ACC_NUM
    assert f"calibrated on {ACC_NUM} val clips" in out


@pytest.mark.parametrize("bench, wanted", [
    ("speed", ["default: 0.25", "videoprune-out/speed-", "default: 1; 0 warns", "default: 3"]),
    ("accuracy", ["min(100, --num)", "videoprune-out/accuracy-", "default: 200"]),
])
def test_help_states_the_defaults(capsys, bench, wanted):
    """`bench speed --help` and `bench accuracy --help` spell out their defaults, the timestamped output folder
    included, so a user need not read the code."""
    with pytest.raises(SystemExit):
        main(["bench", bench, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for w in wanted:
        assert w in text, w
