"""benchmarks/vllm_serving.py: its arguments are checked up front, and on the tiny checkpoint it serves and reports.

The smoke run only shows that the harness works (engine per method in its own process,
concurrency levels, report files, last stdout line one JSON object); on the CPU with a tiny
model its figures are per-request overhead, not pruning, and nothing here asserts a speed-up.
"""

from __future__ import annotations

import importlib.util
import re
import json
import os
import subprocess
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "vllm_serving.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("vllm_serving", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("argv, message", [
    (["--methods", "none,tome"], r"unknown \['tome'\]"),
    (["--rate", "1.0"], r"--rate must be in \[0, 1\)"),
    (["--methods", "stts"], "needs --scorer"),
    (["--concurrency", "1,x"], "comma-separated ints"),
    (["--concurrency", "0"], "must be >= 1"),
    (["--frames", "7"], "must be even"),
    (["--size", "448"], "--size must be WIDTHxHEIGHT"),
])
def test_bad_arguments_fail_before_any_engine_starts(argv, message, capsys):
    """Every bad argument is refused by the parser with a message naming it, before vLLM is imported."""
    bench = _bench_module()
    with pytest.raises(SystemExit):
        bench.parse_args(["--model", "m", *argv])
    assert re.search(message, capsys.readouterr().err)


def test_engine_arguments_per_method():
    """none is vLLM's own model, vllm-evs its built-in rate, the plug-in's methods one videoprune block."""
    bench = _bench_module()
    a = bench.parse_args(["--model", "m", "--rate", "0.5", "--scorer", "s.safetensors", "--in-process"])
    assert "hf_overrides" not in bench.engine_kwargs(a, "none")
    assert bench.engine_kwargs(a, "vllm-evs")["video_pruning_rate"] == 0.5
    assert bench.engine_kwargs(a, "evs-pre")["hf_overrides"] == {"videoprune": {"method": "evs-pre", "rate": 0.5}}
    stts = bench.engine_kwargs(a, "stts")["hf_overrides"]["videoprune"]
    assert stts["scorer_path"] == str(Path("s.safetensors").resolve())
    kw = bench.engine_kwargs(a, "none")
    # every request pays its full prefill and encoder: no prefix or multimodal cache
    assert kw["enable_prefix_caching"] is False and kw["mm_processor_cache_gb"] == 0
    assert kw["distributed_executor_backend"] == "uni"


def test_smoke_run_on_the_tiny_checkpoint(tmp_path, vllm_python):
    """Two methods at two concurrencies: both reported with every level, and the last stdout line is one JSON object."""
    given = vllm_python
    pytest.importorskip("transformers")
    from videoprune.vllm.tiny_checkpoint import build_tiny_checkpoint

    ckpt = build_tiny_checkpoint(tmp_path / "tiny")
    out = tmp_path / "out"
    cmd = [given, str(BENCH), "--model", str(ckpt), "--methods", "none,evs-pre", "--concurrency", "1,2",
           "--rounds", "1", "--frames", "8", "--size", "112x112", "--max-tokens", "2", "--dtype", "float32",
           "--enforce-eager", "--in-process", "--out", str(out)]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(last) == {"none", "evs-pre"} and all(set(v) == {"1", "2"} for v in last.values())
    report = json.loads((out / "results.json").read_text())
    for r in report["results"]:
        assert [lv["requests"] for lv in r["levels"]] == [1, 2]
        assert all(lv["req_per_s"] > 0 and lv["ttft_median_s"] > 0 for lv in r["levels"])
    assert "| evs-pre | 0.75 | 2 | 2 |" in (out / "results.md").read_text()
