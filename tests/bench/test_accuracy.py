"""The accuracy harness on a tiny random model: every field, honest budgets, the same clips for all."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("av")

from videoprune.bench.accuracy import AccuracyConfig, format_table, run_accuracy  # noqa: E402
from videoprune.bundle import load_bundle  # noqa: E402

NUM = 6


def test_bundle_round_trips_model_tokenizer_and_spec(tiny_bundle):
    """load_bundle restores the saved weights, tokenizer and preprocessing spec."""
    bundle = load_bundle(tiny_bundle)
    assert bundle.family == "qwen2_5_vl" and bundle.num_frames == 12 and bundle.system is None
    inp = bundle.inputs(_clip(), "which object moved ?")
    n_video = int((inp["input_ids"] == bundle.model.config.video_token_id).sum())
    assert n_video == 6 * 16  # 12 frames -> 6 slices of 4x4 tokens


def _clip():
    from videoprune.data.synthetic import make_scene, render_scene

    return render_scene(make_scene("test", 0, 0, num_frames=12))


def test_collate_left_pads_and_concatenates_video(tiny_bundle):
    """collate() left-pads ids/masks and concatenates the video tensors in order."""
    bundle = load_bundle(tiny_bundle)
    a = bundle.inputs(_clip(), "which object moved ?")
    b = bundle.inputs(_clip(), "how many times did the circle flash ?")
    batch = bundle.collate([a, b])
    la, lb = a["input_ids"].shape[1], b["input_ids"].shape[1]
    assert batch["input_ids"].shape == (2, max(la, lb))
    assert batch["attention_mask"].sum(1).tolist() == [la, lb]
    assert torch.equal(batch["pixel_values_videos"], torch.cat([a["pixel_values_videos"], b["pixel_values_videos"]]))
    with torch.no_grad():
        out = bundle.model(**batch).logits
    assert out.shape[:2] == batch["input_ids"].shape


def test_harness_reports_every_method_with_honest_budgets(tiny_bundle, tmp_path, capsys):
    """JSON has method/kept_fraction/accuracy per entry; measured fractions follow retained_count."""
    cfg = AccuracyConfig(model=tiny_bundle, uptrained="none", stts_scorer="none",
                         methods="none,evs,evs-pixel,random,uniform,evs-threshold", fractions="1,0.5",
                         num=NUM, calibration_num=3, batch_size=4, out=str(tmp_path / "acc"))
    summary = run_accuracy(cfg)
    results = summary["results"]
    got = {(r["method"], r["kept_fraction"]) for r in results}
    assert got == {("none", 1.0), ("evs", 0.5), ("evs-pixel", 0.5), ("random", 0.5), ("uniform", 0.5), ("evs-threshold", 0.5)}
    for r in results:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["n"] == NUM
        assert set(r["per_type"]) <= {"moved", "direction", "appeared_first", "flash_count", "colour_change"}
    by = {r["method"]: r for r in results}
    # 6 slices x 16 tokens, rate 0.5 -> retained_count = 48 of 96 for every clip; uniform keeps 3 of 6 slices
    for m in ("evs", "evs-pixel", "random", "uniform"):
        assert by[m]["kept_fraction_measured"] == pytest.approx(0.5)
    assert by["none"]["kept_fraction_measured"] == 1.0
    saved = json.loads((tmp_path / "acc" / "accuracy.json").read_text())
    assert saved["results"] == json.loads(json.dumps(results))
    assert (tmp_path / "acc" / "accuracy.png").stat().st_size > 1000
    assert "evs" in format_table(results)


def test_bad_accuracy_config_is_rejected():
    """AccuracyConfig refuses an unknown method name and a kept fraction above 1 when it is built."""
    with pytest.raises(ValueError, match="methods"):
        AccuracyConfig(methods="evs,fastv")
    with pytest.raises(ValueError, match="fractions"):
        AccuracyConfig(fractions="0.5,1.5")


def test_stts_config_comes_from_the_scorers_training_settings(tiny_bundle, tmp_path):
    """bundle.stts_config reads prune_at etc. from the stts_config.json the trainer writes beside the scorer."""
    import videoprune
    from videoprune.stts import STTSConfig

    bundle = load_bundle(tiny_bundle)
    trained = STTSConfig(ratio=0.5, prune_at=0, mlp_hidden=32, attn_dim=16)
    handle = videoprune.patch(bundle.model, trained)
    scorer = tmp_path / "stts_scorer.safetensors"
    handle.save_scorer(str(scorer))
    handle.remove()
    fields = {k: v for k, v in trained.__dict__.items() if k != "scorer_path"}
    (tmp_path / "stts_config.json").write_text(json.dumps({"stts": fields}))

    cfg = bundle.stts_config(0.25, str(scorer))
    assert (cfg.ratio, cfg.prune_at, cfg.mlp_hidden, cfg.attn_dim) == (0.25, 0, 32, 16)
    assert cfg.scorer_path == str(scorer)
    videoprune.patch(bundle.model, cfg).remove()  # the saved weights fit: no fingerprint mismatch
    (tmp_path / "stts_config.json").unlink()
    with pytest.raises(ValueError):  # without the settings, the defaults (prune_at=3) do not fit this scorer
        videoprune.patch(bundle.model, bundle.stts_config(0.25, str(scorer)))


def test_read_records_resolves_video_paths_against_the_jsonl_folder(tmp_path, monkeypatch):
    """read_records keeps every field and makes each relative video path absolute, whatever the cwd."""
    from videoprune.bench.accuracy import read_records

    (tmp_path / "qa").mkdir()
    jsonl = tmp_path / "qa" / "val.jsonl"
    jsonl.write_text(json.dumps({"video": "videos/a.mp4", "answer": "red"}) + "\n"
                     + json.dumps({"video": "../b.mp4", "answer": "up"}) + "\n")
    monkeypatch.chdir(tmp_path)
    recs = read_records("qa/val.jsonl")
    assert [r["video"] for r in recs] == [str(tmp_path / "qa" / "videos" / "a.mp4"), str(tmp_path / "b.mp4")]
    assert [r["answer"] for r in recs] == ["red", "up"]


def _series_rows():
    rows = [{"method": "none", "kept_fraction_measured": 1.0, "accuracy": 0.9}]
    for m in ("evs", "uptrained"):
        rows += [{"method": m, "kept_fraction_measured": f, "accuracy": a} for f, a in ((0.5, 0.8), (0.25, 0.7), (0.125, 0.3))]
    return rows


def test_plot_series_run_in_ascending_kept_fraction_and_end_at_unpruned():
    """Each method's line goes 10% -> 25% -> 50% -> 100% (the unpruned point once came first, drawing a
    line back from 100% to 10%)."""
    from videoprune.bench.accuracy import _series

    series = _series(_series_rows())
    assert series["evs"] == [(0.125, 0.3), (0.25, 0.7), (0.5, 0.8), (1.0, 0.9)]
    assert "none" not in series


def test_plot_series_give_uptrained_no_unpruned_point_of_the_default_model():
    """The uptrained series holds only its own pruned points: the default model's unpruned point is not drawn on its
    line."""
    from videoprune.bench.accuracy import _series

    assert _series(_series_rows())["uptrained"] == [(0.125, 0.3), (0.25, 0.7), (0.5, 0.8)]


class _RecordingBar:
    """Stands in for tqdm: remembers its total and how far it was advanced."""

    made: list[_RecordingBar] = []

    def __init__(self, iterable=(), *args, total=None, desc="", **kwargs):
        self.iterable, self.total, self.desc, self.n = iterable, total, desc, 0
        _RecordingBar.made.append(self)

    def __iter__(self):
        return iter(self.iterable)

    def update(self, n=1):
        self.n += n

    def set_description(self, desc):
        pass

    def close(self):
        pass


def test_progress_bar_total_is_all_the_work_it_counts(tiny_bundle, tmp_path, monkeypatch):
    """One bar whose total is the calibration clips (once, shared by every fraction) plus each
    (method, fraction)'s test clips, and which ends exactly there: its ETA covers the calibration."""
    monkeypatch.setattr("tqdm.auto.tqdm", _RecordingBar)
    _RecordingBar.made.clear()
    cfg = AccuracyConfig(model=tiny_bundle, uptrained="none", stts_scorer="none", methods="none,evs,evs-threshold",
                         fractions="1,0.5,0.25", num=4, calibration_num=3, batch_size=4, out=str(tmp_path / "acc"))
    run_accuracy(cfg, progress=False)
    (bar,) = [b for b in _RecordingBar.made if b.desc == "accuracy"]
    evaluations = 1 + 2 + 2  # none @ 100%, evs and evs-threshold @ 50% and 25%
    assert bar.total == bar.n == 3 + evaluations * 4


@pytest.mark.parametrize("num, want", [(4, 4), (100, 100), (250, 100)])
def test_calibration_clips_default_to_at_most_num(num, want):
    """Without --calibration-num, evs-threshold calibrates on min(100, --num) val clips."""
    assert AccuracyConfig(num=num).calibration_num == want
    assert AccuracyConfig(num=num, calibration_num=7).calibration_num == 7


def test_threshold_keeps_the_asked_fraction_on_average_over_clips():
    """threshold_for_fraction's tau keeps the asked mean fraction (frame 0's +inf always kept)."""
    from videoprune.bench.accuracy import threshold_for_fraction

    inf = float("inf")
    ds = [torch.tensor([inf, 0.1, 0.2, 0.3]), torch.tensor([inf, 0.4, 0.5, 0.6])]
    for fraction in (0.25, 0.5, 0.75):
        tau = threshold_for_fraction(ds, fraction)
        kept = sum(float((d > tau).float().mean()) for d in ds) / len(ds)
        assert kept == pytest.approx(fraction)


@pytest.mark.parametrize("kept", [0.5, 0.25, 0.1])
def test_method_config_uniform_keeps_the_fraction_of_slices(kept):
    """uniform at drop rate 1 - f decodes 2 * max(1, round(f * slices)) frames, as bench accuracy always has."""
    from types import SimpleNamespace

    from videoprune.bench.accuracy import method_config

    bundle = SimpleNamespace(num_frames=16)
    assert method_config("uniform", 1.0 - kept, bundle) == (None, 2 * max(1, round(kept * 8)))


def test_method_config_unknown_method_is_named():
    """An unknown method is a ValueError naming it."""
    from videoprune.bench.accuracy import method_config

    with pytest.raises(ValueError, match="tome"):
        method_config("tome", 0.5, None)
