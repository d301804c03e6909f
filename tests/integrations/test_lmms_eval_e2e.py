"""lmms-eval, run for real on the exported local task, scores the embedded model exactly as `bench accuracy` does.

The lmms-eval side runs the real ``lmms-eval`` CLI in a subprocess (offline: no hub), through
the ``videoprune`` entry point; it may live in another environment (lmms-eval 0.7.3 needs
filelock<4, which the pinned set does not have): ``VIDEOPRUNE_LMMS_EVAL`` names its executable,
else the one beside this interpreter is used. Without one the test is skipped, unless
``VIDEOPRUNE_REQUIRE_LMMS_EVAL=1`` (CI), where that is a failure.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NUM_CLIPS = 20
SEED = 0
CASES = [("none", None), ("evs", 0.75)]  # (method, rate): the unpruned reference and EVS keeping 25%


def _lmms_eval_executable() -> str | None:
    given = os.environ.get("VIDEOPRUNE_LMMS_EVAL")
    if given:
        if not Path(given).is_file():
            pytest.fail(f"VIDEOPRUNE_LMMS_EVAL={given} is not a file")
        return given
    beside = Path(sys.executable).parent / "lmms-eval"
    return str(beside) if beside.is_file() else None


@pytest.fixture(scope="module")
def lmms_eval_exe():
    exe = _lmms_eval_executable()
    if exe is None:
        msg = "lmms-eval is not installed (make the eval environment; see docs/eval.md)"
        if os.environ.get("VIDEOPRUNE_REQUIRE_LMMS_EVAL") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from videoprune.integrations.lmms_task import ExportTaskConfig, export_lmms_task

    return export_lmms_task(tmp_path_factory.mktemp("lmms-task"), ExportTaskConfig(seed=SEED, num=NUM_CLIPS),
                            progress=False)


@pytest.fixture(scope="module")
def bench(task, tmp_path_factory):
    """Per method: ``bench accuracy``'s report entry and its answer for every clip, on the exported clips."""
    from videoprune.bench.accuracy import AccuracyConfig, evaluate, method_config, read_records, run_accuracy
    from videoprune.bundle import load_bundle

    report = run_accuracy(AccuracyConfig(methods="none,evs", fractions="1,0.25", seed=SEED, num=NUM_CLIPS,
                                         data_dir=task["data_dir"], out=str(tmp_path_factory.mktemp("bench"))),
                          progress=False)
    bundle = load_bundle("default")
    records = read_records(Path(task["data_dir"]) / f"test-seed{SEED}" / "test.jsonl")
    out = {}
    for method, rate in CASES:
        answers = []
        cfg, frames = method_config(method, rate or 0.0, bundle)
        evaluate(bundle.model, bundle, records, cfg=cfg, num_frames=frames, answers=answers)
        entry = next(r for r in report["results"] if r["method"] == method)
        out[method] = (entry, answers)
    return out


def _run_lmms_eval(exe, task, method, rate, out_dir):
    args = f"pretrained=default,method={method}" + (f",rate={rate}" if rate is not None else "")
    # lmms-eval's interpreter imports videoprune from its own (editable) install, whose metadata holds the
    # entry point; a PYTHONPATH onto the source folder would put a metadata copy without it first
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env = {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(out_dir / "hf"),
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([exe, "--model", "videoprune", "--model_args", args, "--batch_size", "20",
                           "--include_path", task["out"], "--tasks", "videoprune_temporal_qa",
                           "--output_path", str(out_dir / "results"), "--log_samples"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [p for p in (out_dir / "results").rglob("*_results.json")]
    samples = [p for p in (out_dir / "results").rglob("*_samples_videoprune_temporal_qa.jsonl")]
    assert len(results) == 1 and len(samples) == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(results[0].read_text()), [json.loads(x) for x in samples[0].read_text().splitlines()]


@pytest.mark.parametrize("method,rate", CASES)
def test_lmms_eval_matches_bench_accuracy_clip_by_clip(lmms_eval_exe, task, bench, method, rate, tmp_path):
    """lmms-eval's accuracy, each clip's answer and the kept fraction equal bench accuracy's on the same clips."""
    results, samples = _run_lmms_eval(lmms_eval_exe, task, method, rate, tmp_path)
    entry, answers = bench[method]
    got = {s["doc_id"]: s["filtered_resps"] for s in samples}
    got = [got[i][0] if isinstance(got[i], list) else got[i] for i in range(NUM_CLIPS)]
    assert got == answers
    assert results["results"]["videoprune_temporal_qa"]["exact_match,none"] == entry["accuracy"]
    assert results["throughput"]["avg_kept_fraction"] == pytest.approx(entry["kept_fraction_measured"], abs=1e-4)
    assert results["config"]["model_args"].startswith(f"pretrained=default,method={method}")
