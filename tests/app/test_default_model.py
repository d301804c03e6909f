"""The embedded default model: loads offline, answers held-out clips, drives `videoprune ask` with no arguments."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("av")

from videoprune.bundle import EMBEDDED, SAMPLE_JSON, load_bundle, sample_question, sample_video  # noqa: E402
from videoprune.cli import main  # noqa: E402

# Held-out clips: the test split (never trained on) at a seed the accuracy benchmark does not use.
HELD_OUT_SEED, HELD_OUT_NUM = 1234, 20


@pytest.fixture(scope="module")
def offline():
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def default(offline):
    return load_bundle("default")


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    from videoprune.bench.accuracy import read_records
    from videoprune.data.qa_model import FPS, FRAME_SIZE, NUM_FRAMES
    from videoprune.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("held-out")
    jsonl = write_dataset(out, "test", HELD_OUT_NUM, HELD_OUT_SEED, num_frames=NUM_FRAMES, size=FRAME_SIZE, fps=FPS,
                          progress=False)
    return read_records(jsonl)


def test_the_embedded_models_ship_with_the_package():
    """Both embedded models and the default model's STTS scorer are inside the package, and all assets together stay
    within 20 MiB."""
    for name in ("default", "default-uptrained"):
        assert (EMBEDDED[name] / "model.safetensors").is_file(), name
    assert (EMBEDDED["default"] / "stts_scorer.safetensors").is_file()
    total = sum(p.stat().st_size for p in EMBEDDED["default"].parent.rglob("*") if p.is_file())
    assert total <= 20 * 2**20


def test_default_model_loads_offline_with_its_preprocessing(default):
    """load_bundle('default') works offline and restores the preprocessing it was trained with (qwen2_5_vl, 16 frames of
    112 px, 8 tokens per second)."""
    assert default.family == "qwen2_5_vl" and default.num_frames == 16 and default.frame_size == 112
    assert default.model.config.vision_config.tokens_per_second == 8


def test_default_model_answers_the_sample_clip(default):
    """The embedded default model answers the bundled held-out sample clip correctly."""
    from videoprune.bench.accuracy import evaluate

    rec = json.loads(SAMPLE_JSON.read_text())
    acc, _, _ = evaluate(default.model, default, [{"video": sample_video(), "question": rec["question"],
                                                    "answer": rec["answer"], "type": rec["type"]}])
    assert acc == 1.0


def test_default_model_answers_held_out_clips(default, held_out):
    """Far above the answer prior (~0.2-0.3) on clips from the never-trained test split (0.90 measured)."""
    from videoprune.bench.accuracy import evaluate

    acc, _, _ = evaluate(default.model, default, held_out)
    assert acc >= 0.85, acc


def test_uptrained_model_keeps_its_accuracy_under_evs(offline, held_out):
    """The EVS-uptrained model records rate 0.75, keeps about a quarter of the video tokens at that rate, and still
    scores at least 0.8 on held-out clips."""
    from videoprune import EVSConfig
    from videoprune.bench.accuracy import evaluate

    up = load_bundle("default-uptrained")
    assert up.model.config.video_pruning_rate == pytest.approx(0.75)
    acc, _, kept = evaluate(up.model, up, held_out, cfg=EVSConfig(rate=0.75))
    assert kept == pytest.approx(0.25, abs=0.01)
    assert acc >= 0.8, acc  # 0.85 measured


def test_ask_with_no_arguments_answers_the_bundled_sample(offline, capsys):
    """The README's main job: `videoprune ask` on the bundled clip with the embedded model."""
    assert main(["ask", "--timing-runs", "1", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert sample_question() in captured.err
    expected = json.loads(SAMPLE_JSON.read_text())["answer"]
    assert out["answer_unpruned"] == expected
    assert out["tokens_after"] < out["tokens_before"] and out["ttft_pruned_s"] > 0
