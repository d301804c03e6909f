"""`videoprune train` under faults: a reused output folder, changed settings on resume, corrupt checkpoints,
a full disk, a crash mid-save, a video that breaks mid-run, Ctrl-C. Each says what it reports and that nothing
written before is lost (earlier checkpoints and metrics byte for byte)."""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("transformers")
pytest.importorskip("av")

import torch  # noqa: E402

from videoprune.train import TrainConfig, latest_checkpoint, train  # noqa: E402
from videoprune.train.data import DataError  # noqa: E402

FRAMES = 8
PIXELS = 112 * 112
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """4 synthetic clips (16 frames, 112x112) and their JSONL."""
    from videoprune.data.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("toy"), "train", num=4, seed=0, progress=False)


def tiny(data, out, **overrides) -> TrainConfig:
    """The built-in tiny Qwen2.5-VL on the toy clips: a step takes a fraction of a second."""
    kw = dict(data=str(data), model="tiny:qwen2_5_vl", output_dir=str(out), max_steps=3, lr=1e-2, num_frames=FRAMES,
              min_pixels=PIXELS, max_pixels=PIXELS, rate_dist="fixed:0.5", schedule="constant", save_every=1,
              no_export=True)
    kw.update(overrides)
    return TrainConfig(**kw)


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), TensorBoard events left out (they hold wall times)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "tfevents" not in p.name}


def steps(out: Path) -> list[int]:
    with open(out / "metrics.csv") as fh:
        return [int(r["step"]) for r in csv.DictReader(fh)]


def lrs(out: Path) -> list[float]:
    with open(out / "metrics.csv") as fh:
        return [float(r["lr"]) for r in csv.DictReader(fh)]


def cli(*argv) -> int:
    from videoprune.cli import main

    return main(["train", *map(str, argv)])


# --------------------------------------------------------------------------------------------
# the output folder
# --------------------------------------------------------------------------------------------
def test_a_non_empty_output_dir_is_refused_in_one_line_and_left_untouched(toy, tmp_path, capsys):
    """`videoprune train` into a folder holding an earlier run exits 1 with one line naming what it holds and the
    --resume auto / --overwrite choices, and changes no file there."""
    out = tmp_path / "run"
    train(tiny(toy, out, max_steps=2))
    before = files(out)
    rc = cli("--data", toy, "--model", "tiny:qwen2_5_vl", "--output-dir", out, "--max-steps", 1,
             "--num-frames", FRAMES, "--min-pixels", PIXELS, "--max-pixels", PIXELS, "--rate-dist", "fixed:0.5")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1] == (f"videoprune train: error: output_dir {str(out)!r} is not empty (it holds checkpoints, "
                       "metrics.csv, tb): add --resume auto to continue the run there, or --overwrite to delete its "
                       "run files and start over")
    assert files(out) == before


def test_overwrite_deletes_the_old_runs_files_and_nothing_else(toy, tmp_path):
    """--overwrite removes the earlier run's checkpoints and export but keeps files the user put in the folder."""
    out = tmp_path / "run"
    train(tiny(toy, out, max_steps=3, no_export=False))
    (out / "notes.txt").write_text("mine")
    train(tiny(toy, out, max_steps=2, overwrite=True))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000001", "step_0000002"]
    assert steps(out) == [1, 2] and not (out / "export").exists()
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_and_overwrite_together_are_refused(toy, tmp_path):
    """resume and overwrite together are contradictory and refused when the config is built."""
    with pytest.raises(ValueError, match="either resume .* or overwrite"):
        tiny(toy, tmp_path, resume="auto", overwrite=True)


def test_auto_resume_without_a_checkpoint_replaces_the_metrics_of_the_unsaved_run(toy, tmp_path):
    """A run killed before its first save left metrics.csv only: resume=auto starts over, no rows mixed in."""
    out = tmp_path / "run"
    train(tiny(toy, out, max_steps=2, save_every=0))
    for ckpt in (out / "checkpoints").iterdir():
        (ckpt / "COMPLETE").unlink()  # as if killed before any checkpoint completed
    result = train(tiny(toy, out, max_steps=1, resume="auto"))
    assert result.steps == 1 and steps(out) == [1]


def test_auto_resume_never_deletes_an_export_it_cannot_resume(toy, tmp_path):
    """resume=auto refuses a folder holding an export but no complete checkpoint, and leaves every file as it was."""
    out = tmp_path / "run"
    train(tiny(toy, out, max_steps=1, no_export=False))
    for ckpt in (out / "checkpoints").iterdir():
        (ckpt / "COMPLETE").unlink()
    before = files(out)
    with pytest.raises(ValueError, match="holds an export but no complete checkpoint.*--overwrite"):
        train(tiny(toy, out, max_steps=2, resume="auto"))
    assert files(out) == before


def test_resuming_an_earlier_checkpoint_with_later_ones_present_is_refused(toy, tmp_path):
    """Resuming from a checkpoint while later ones exist in the same run is refused, naming them, and no file changes.
    """
    out = tmp_path / "run"
    train(tiny(toy, out, max_steps=3))
    before = files(out)
    with pytest.raises(ValueError, match=r"holds checkpoints after step_0000001 \(step_0000002, step_0000003\)"):
        train(tiny(toy, out, max_steps=3, resume=str(out / "checkpoints" / "step_0000001")))
    assert files(out) == before


def test_resuming_another_folders_checkpoint_into_a_run_folder_is_refused(toy, tmp_path):
    """Resuming from a checkpoint of another run folder into an existing run is refused, since it would mix two runs."""
    train(tiny(toy, tmp_path / "a", max_steps=1))
    train(tiny(toy, tmp_path / "b", max_steps=1))
    with pytest.raises(ValueError, match="is not one of its checkpoints; resuming there would mix two runs"):
        train(tiny(toy, tmp_path / "b", max_steps=2, resume=str(tmp_path / "a" / "checkpoints" / "step_0000001")))


# --------------------------------------------------------------------------------------------
# changed settings on resume
# --------------------------------------------------------------------------------------------
def test_resume_applies_a_new_lr_schedule_and_length_from_the_resumed_step(toy, tmp_path, capsys):
    """A finished 2-step cosine run (lr 1e-2) resumed to 4 steps, linear, lr 5e-3: steps 3-4 follow the new curve."""
    out = tmp_path / "run"
    train(tiny(toy, out, max_steps=2, schedule="cosine"))
    capsys.readouterr()
    result = train(tiny(toy, out, max_steps=4, schedule="linear", lr=5e-3, resume="auto"))
    err = capsys.readouterr().err
    for change in ("lr 0.01 -> 0.005", "schedule cosine -> linear", "max_steps 2 -> 4"):
        assert f"videoprune train: resume: {change} (applied from step 3 on)" in err
    assert result.steps == 4 and steps(out) == [1, 2, 3, 4]
    assert lrs(out)[2:] == pytest.approx([5e-3 * (1 - 2 / 4), 5e-3 * (1 - 3 / 4)], rel=1e-5)


def test_extending_a_finished_cosine_run_does_not_train_at_lr_zero(toy, tmp_path):
    """Resuming a finished cosine run with more max_steps follows the cosine curve of the new length instead of staying
    at lr 0."""
    out = tmp_path / "run"
    train(tiny(toy, out, max_steps=2, schedule="cosine"))
    train(tiny(toy, out, max_steps=4, schedule="cosine", resume="auto"))
    cosine = [0.5 * (1 + math.cos(math.pi * s / 4)) for s in (2, 3)]  # the 4-step curve at steps 3 and 4
    assert lrs(out)[2:] == pytest.approx([1e-2 * c for c in cosine], rel=1e-5)  # metrics.csv keeps 6 digits


def test_a_changed_lr_changes_the_resumed_losses(toy, tmp_path):
    """A resumed run uses the newly given lr: losses match up to the first step after resuming and differ from then on.
    """
    train(tiny(toy, tmp_path / "a", max_steps=1))
    train(tiny(toy, tmp_path / "b", max_steps=1))
    same = train(tiny(toy, tmp_path / "a", max_steps=3, resume="auto")).losses
    lower = train(tiny(toy, tmp_path / "b", max_steps=3, lr=1e-4, resume="auto")).losses
    assert same[0] == lower[0]  # step 2 runs on the weights of step 1 either way
    assert same[1] != lower[1]  # step 3 sees the update made at the new lr


def test_resume_refuses_changed_data_settings_listing_each(toy, tmp_path):
    """Resuming with a changed batch size or seed is refused, listing each old and new value, and no file changes."""
    out = tmp_path / "run"
    train(tiny(toy, out, max_steps=1))
    before = files(out)
    with pytest.raises(ValueError, match=r"settings differ from the checkpoint's: batch_size 1 -> 2; seed 0 -> 1\. "
                                         r"A resume must keep them"):
        train(tiny(toy, out, max_steps=2, batch_size=2, seed=1, resume="auto"))
    assert files(out) == before


# --------------------------------------------------------------------------------------------
# corrupt checkpoints
# --------------------------------------------------------------------------------------------
CORRUPTIONS = {"garbage": lambda b: b"\x80\x04 not a pickle" * 8, "truncated": lambda b: b[: len(b) // 2],
               "empty": lambda b: b""}


@pytest.mark.parametrize("name", ["trainer.pt", "rng_rank0.pt"])
@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_a_corrupt_checkpoint_file_is_named_in_one_line(toy, tmp_path, name, how):
    """Resuming from a checkpoint with a corrupt trainer.pt or rng file raises one line naming that file, and no file
    changes."""
    out = tmp_path / "run"
    train(tiny(toy, out, max_steps=2))
    bad = out / "checkpoints" / "step_0000002" / name
    bad.write_bytes(CORRUPTIONS[how](bad.read_bytes()))
    before = files(out)
    with pytest.raises(ValueError) as info:
        train(tiny(toy, out, max_steps=3, resume=str(bad.parent)))
    text = str(info.value)
    assert text.startswith(f"checkpoint file is corrupt: {bad} (") and "\n" not in text
    assert files(out) == before


@pytest.mark.parametrize("name", ["trainer.pt", "rng_rank0.pt"])
def test_auto_resume_falls_back_past_a_corrupt_checkpoint_and_replaces_it(toy, tmp_path, name, capsys):
    """resume=auto skips a corrupt latest checkpoint with a message, resumes from the one before with exactly the losses
    of an uninterrupted run, and rewrites the bad step whole."""
    full = train(tiny(toy, tmp_path / "full", max_steps=3, save_every=0))
    out = tmp_path / "run"
    train(tiny(toy, out, max_steps=2))
    bad = out / "checkpoints" / "step_0000002" / name
    bad.write_bytes(b"garbage")
    capsys.readouterr()
    resumed = train(tiny(toy, out, max_steps=3, resume="auto"))
    err = capsys.readouterr().err
    assert f"resume=auto: skipping {bad.parent}: checkpoint file is corrupt: {bad} (" in err
    assert f"resumed from {out / 'checkpoints' / 'step_0000001'} at step 1" in err
    assert resumed.losses == full.losses[1:]  # exact, from the older checkpoint
    assert torch.load(bad, weights_only=False)  # step 2 was written again, whole
    assert steps(out) == [1, 2, 3]


def test_auto_resume_with_no_loadable_checkpoint_says_why_for_each(toy, tmp_path):
    """When no checkpoint loads, resume=auto raises one error giving the reason for each checkpoint, and no file
    changes."""
    out = tmp_path / "run"
    train(tiny(toy, out, max_steps=2))
    for ckpt in (out / "checkpoints").iterdir():
        (ckpt / "trainer.pt").write_bytes(b"")
    before = files(out)
    with pytest.raises(ValueError, match=r"no checkpoint under .* loads \(step_0000002: checkpoint file is corrupt: "
                                         r".*; step_0000001: checkpoint file is corrupt"):
        train(tiny(toy, out, max_steps=3, resume="auto"))
    assert files(out) == before


# --------------------------------------------------------------------------------------------
# full disk, crash mid-save
# --------------------------------------------------------------------------------------------
def _fail_saving_step(monkeypatch, step: int, error: BaseException):
    """Make torch.save raise ``error`` while writing checkpoint ``step`` (other saves go through)."""
    real = torch.save

    def save(obj, f, *a, **k):
        if f"step_{step:07d}" in str(getattr(f, "name", f)):
            raise error
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file "
                 "write failed"),
], ids=["oserror", "torch-writer"])
def test_a_full_disk_is_one_line_and_keeps_the_earlier_checkpoints(toy, tmp_path, monkeypatch, capsys, error):
    """A full disk while saving exits 1 with one line naming the file, removes the half-written checkpoint and keeps the
    earlier checkpoints intact."""
    out = tmp_path / "run"
    train(tiny(toy, out, max_steps=2))
    before = files(out)
    _fail_saving_step(monkeypatch, 3, error)
    full_disk = SimpleNamespace(total=0, used=0, free=0)
    monkeypatch.setattr("videoprune.train.trainer.shutil.disk_usage", lambda p: full_disk)
    capsys.readouterr()
    rc = cli("--data", toy, "--model", "tiny:qwen2_5_vl", "--output-dir", out, "--max-steps", 3, "--resume", "auto",
             "--num-frames", FRAMES, "--min-pixels", PIXELS, "--max-pixels", PIXELS, "--rate-dist", "fixed:0.5",
             "--schedule", "constant", "--lr", "0.01", "--save-every", 1, "--no-export")
    assert rc == 1
    tmp = out / "checkpoints" / ".tmp-step_0000003"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"videoprune train: error: No space left on device: {tmp / 'trainer.pt'}")
    after = files(out)
    assert {k: v for k, v in after.items() if k != "metrics.csv"} == {k: v for k, v in before.items()
                                                                      if k != "metrics.csv"}
    assert after["metrics.csv"].startswith(before["metrics.csv"])  # step 3's row is added, nothing rewritten
    assert not tmp.exists() and latest_checkpoint(out).name == "step_0000002"


def test_a_crash_mid_save_leaves_no_checkpoint_that_auto_would_pick(toy, tmp_path, monkeypatch):
    """A crash while a checkpoint is written leaves only a hidden temporary folder, so resume=auto picks the last
    complete checkpoint and reproduces the losses exactly."""
    class Crash(BaseException):
        pass

    full = train(tiny(toy, tmp_path / "full", max_steps=3, save_every=0))
    out = tmp_path / "run"
    _fail_saving_step(monkeypatch, 3, Crash())
    with pytest.raises(Crash):
        train(tiny(toy, out, max_steps=3))
    assert (out / "checkpoints" / ".tmp-step_0000003").exists()  # the half-written one, hidden from auto
    assert latest_checkpoint(out).name == "step_0000002"
    monkeypatch.undo()
    resumed = train(tiny(toy, out, max_steps=3, resume="auto"))
    assert resumed.losses == full.losses[2:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000001", "step_0000002", "step_0000003"]


# --------------------------------------------------------------------------------------------
# a video that breaks mid-run
# --------------------------------------------------------------------------------------------
def _faststart_truncated(src: Path, dst: Path) -> None:
    """``src`` remuxed with its index up front (moov before mdat, passes the header probe), cut at half its bytes."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4", options={"movflags": "faststart"}) as outp:
        stream = outp.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                outp.mux(packet)
    dst.write_bytes(dst.read_bytes()[: dst.stat().st_size // 2])


def test_a_video_breaking_mid_run_checkpoints_first_and_names_file_and_line(toy, tmp_path, capsys):
    """A video that fails to decode mid-run saves a checkpoint first and raises an error naming the jsonl file, line and
    clip; once the clip is fixed the resumed run reproduces the uninterrupted losses."""
    import shutil

    from videoprune.train.data import ShardedSchedule

    data = tmp_path / "data"
    shutil.copytree(toy.parent, data)
    jsonl = data / toy.name
    row = json.loads(jsonl.read_text().splitlines()[3])
    clip = data / row["video"]
    good = clip.read_bytes()
    _faststart_truncated(data / row["video"], data / "cut.mp4")
    clip.write_bytes((data / "cut.mp4").read_bytes())
    order = [ShardedSchedule(4, 1).micro_batch(m)[0] for m in range(4)]
    k = order.index(3)  # steps 1..k run; step k+1 reads line 4
    assert k >= 1
    full = train(tiny(toy, tmp_path / "full", max_steps=4, save_every=0))
    out = tmp_path / "run"
    with pytest.raises(DataError) as info:
        train(tiny(jsonl, out, max_steps=4, save_every=0))
    assert str(info.value).startswith(f"{jsonl}:4: video {str(clip.resolve())!r} failed to decode: ")
    assert f"data error; saved {out / 'checkpoints' / f'step_{k:07d}'} first" in capsys.readouterr().err
    assert latest_checkpoint(out).name == f"step_{k:07d}" and steps(out) == list(range(1, k + 1))
    clip.write_bytes(good)  # fixed: the run goes on exactly
    resumed = train(tiny(jsonl, out, max_steps=4, save_every=0, resume="auto"))
    assert resumed.losses == full.losses[k:]


# --------------------------------------------------------------------------------------------
# Ctrl-C
# --------------------------------------------------------------------------------------------
def test_sigint_checkpoints_exits_130_and_the_run_resumes(toy, tmp_path):
    """SIGINT during training saves a checkpoint, exits 130 with a message, and the run resumes from it with the losses
    of an uninterrupted run."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "videoprune.cli", "train", "--data", str(toy), "--model", "tiny:qwen2_5_vl",
         "--output-dir", str(out), "--max-steps", "1000", "--num-frames", str(FRAMES), "--min-pixels", str(PIXELS),
         "--max-pixels", str(PIXELS), "--rate-dist", "fixed:0.5", "--schedule", "constant", "--lr", "0.01",
         "--no-export"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "metrics.csv").exists() and steps(out)) and proc.poll() is None:
            assert time.monotonic() < deadline, "no step logged"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    ckpt = latest_checkpoint(out)
    k = int(ckpt.name.removeprefix("step_"))
    assert f"videoprune train: interrupted: saved {ckpt}" in err and err.rstrip().endswith("videoprune: interrupted")
    assert steps(out) == list(range(1, k + 1))
    resumed = train(tiny(toy, out, max_steps=k + 2, save_every=0, resume="auto"))
    full = train(tiny(toy, tmp_path / "full", max_steps=k + 2, save_every=0))
    assert resumed.losses == pytest.approx(full.losses[k:], rel=1e-6)  # another process: same math, maybe not bits
