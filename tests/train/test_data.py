"""Training data: labels only on answer tokens, disjoint rank shards, bad videos reported by line and skipped or fatal."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from trainkit import FRAMES, PIXELS, tiny_config
from videoprune.train import build_word_tokenizer, train
from videoprune.train.data import IGNORE, DataError, ShardedSchedule, VideoQADataset, collate, read_jsonl
from videoprune.video import SamplingConfig


def test_labels_cover_exactly_the_answer_and_end_of_turn(toy_jsonl):
    """Labels are set on exactly the answer and its end-of-turn token, equal to their input ids, and ignored everywhere
    before, so the loss trains only the answer."""
    tok = build_word_tokenizer()
    records, _ = read_jsonl(toy_jsonl)
    ds = VideoQADataset(records, tok, "qwen2_5_vl", sampling=SamplingConfig(num_frames=FRAMES),
                        min_pixels=PIXELS, max_pixels=PIXELS)
    item = ds[0]
    labelled = item["labels"] != IGNORE
    assert tok.decode(item["labels"][labelled]) == f"{records[0].answer} <|im_end|>"
    assert torch.equal(item["input_ids"][labelled], item["labels"][labelled])
    assert not labelled[: -labelled.sum()].any()  # nothing before the answer


def test_collate_left_pads_with_ignored_labels(toy_jsonl):
    """collate left-pads each row with pad ids, ignored labels and a zero attention mask, keeps each row's tokens
    intact, and stacks one video grid per row."""
    tok = build_word_tokenizer()
    records, _ = read_jsonl(toy_jsonl)
    ds = VideoQADataset(records, tok, "qwen2_5_vl", sampling=SamplingConfig(num_frames=FRAMES),
                        min_pixels=PIXELS, max_pixels=PIXELS)
    a, b = ds[0], ds[1]
    batch = collate([a, b], tok.pad_token_id)
    for row, item in enumerate((a, b)):
        n = item["input_ids"].shape[0]
        pad = batch["input_ids"].shape[1] - n
        assert torch.equal(batch["input_ids"][row, pad:], item["input_ids"])
        assert (batch["labels"][row, :pad] == IGNORE).all() and (batch["attention_mask"][row, :pad] == 0).all()
    assert batch["video_grid_thw"].shape[0] == 2


@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_shards_are_disjoint_and_equal_sized(world):
    """For 1 to 3 ranks the per-rank shards share no sample and are equal in size, so no rank waits or sees another's
    data."""
    n, bs = 11, 2
    per_rank = [[i for m in range(ShardedSchedule(n, bs, r, world, seed=5).micro_per_epoch)
                 for i in ShardedSchedule(n, bs, r, world, seed=5).micro_batch(m)] for r in range(world)]
    flat = [i for shard in per_rank for i in shard]
    assert len(set(flat)) == len(flat)
    assert len({len(s) for s in per_rank}) == 1 and len(per_rank[0]) == (n // world) // bs * bs


def test_next_epoch_reshuffles():
    """The second epoch visits the samples in a different order from the first."""
    s = ShardedSchedule(8, 4, 0, 1, seed=0)
    assert s.micro_batch(0) + s.micro_batch(1) != s.micro_batch(2) + s.micro_batch(3)


@pytest.fixture
def broken_jsonl(toy_jsonl, tmp_path):
    """The toy data with line 2's video missing and line 4's video replaced by garbage bytes."""
    root = tmp_path / "broken"
    shutil.copytree(toy_jsonl.parent, root)
    lines = (root / toy_jsonl.name).read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    (root / rows[1]["video"]).unlink()
    (root / rows[3]["video"]).write_bytes(b"not a video at all" * 100)
    return root / toy_jsonl.name


def test_bad_video_is_fatal_with_its_line_number(broken_jsonl):
    """With on_bad_video='error' a missing video stops read_jsonl with an error naming the file and line."""
    with pytest.raises(ValueError, match=r"train\.jsonl:2: bad video"):
        read_jsonl(broken_jsonl, "error")


def test_bad_videos_are_skipped_and_reported_by_line(broken_jsonl):
    """With on_bad_video='skip' the missing and the garbage video are left out and reported by line number."""
    records, bad = read_jsonl(broken_jsonl, "skip")
    assert [r.line for r in records] == [1, 3]
    assert [b.line for b in bad] == [2, 4]


def test_training_with_skip_never_reads_a_bad_video(broken_jsonl, tmp_path, capsys):
    """Training with skip draws only good lines, reports the skipped lines, and warns about each on stderr."""
    seen = []
    result = train(tiny_config(broken_jsonl, tmp_path / "out", max_steps=2, on_bad_video="skip", no_export=True),
                   on_step=lambda s: seen.extend(s.indices))
    assert [b.line for b in result.skipped] == [2, 4] and set(seen) <= {0, 1}
    assert "train.jsonl:2: skipped bad video" in capsys.readouterr().err


def test_training_with_error_stops_before_any_step(broken_jsonl, tmp_path):
    """Training with on_bad_video='error' fails on the bad line before any step runs."""
    steps = []
    with pytest.raises(ValueError, match=r":2: bad video"):
        train(tiny_config(broken_jsonl, tmp_path / "out", no_export=True), on_step=steps.append)
    assert steps == []


def test_malformed_line_names_its_number(tmp_path):
    """A line that is not valid JSON is always fatal, even with skip, and the error names its line."""
    bad = tmp_path / "d.jsonl"
    bad.write_text('{"video": "a.mp4", "question": "q", "answer": "a"}\n{oops\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:2: not valid JSON"):
        read_jsonl(bad, "skip")  # line 1's missing video is skipped; line 2 is malformed, always fatal


@pytest.mark.parametrize("stamps", ["[0.0, NaN]", "[Infinity]", "[-1.0]", "[true]"])
def test_non_finite_or_negative_timestamps_are_refused_with_their_line(tmp_path, stamps):
    """NaN, infinite, negative or non-numeric timestamps are refused with an error naming the line."""
    bad = tmp_path / "d.jsonl"
    bad.write_text(f'{{"video": "a.mp4", "question": "q", "answer": "a", "timestamps": {stamps}}}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:1: 'timestamps' must be"):
        read_jsonl(bad, "skip")


@pytest.fixture
def outside_jsonl(toy_jsonl, tmp_path):
    """A data folder whose lines 2-4 reach out of it: '..', an absolute path, a symlink to a clip outside."""
    rows = [json.loads(line) for line in toy_jsonl.read_text().splitlines()]
    root = tmp_path / "data"
    (root / "videos").mkdir(parents=True)
    shutil.copy(toy_jsonl.parent / rows[0]["video"], root / "videos" / "inside.mp4")
    (root / "videos" / "link.mp4").symlink_to(toy_jsonl.parent / rows[3]["video"])
    up = Path("..") / ".." / (toy_jsonl.parent / rows[1]["video"]).relative_to(tmp_path.parent)  # data/../../toy0/..
    videos = ["videos/inside.mp4", str(up), str(toy_jsonl.parent / rows[2]["video"]), "videos/link.mp4"]
    lines = [json.dumps({**row, "video": v}) for row, v in zip(rows, videos)]
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root / "train.jsonl"


def test_videos_may_live_outside_the_data_folder_by_default(outside_jsonl):
    """By default videos reached by '..', an absolute path or a symlink outside the data folder are accepted."""
    records, bad = read_jsonl(outside_jsonl)
    assert len(records) == 4 and bad == []


@pytest.mark.parametrize("line", [2, 3, 4])
def test_confine_refuses_dotdot_absolute_and_symlinked_paths(outside_jsonl, line):
    """With confine, a video reached by '..', an absolute path or a symlink outside the data folder is refused naming
    the line, never silently skipped."""
    lines = outside_jsonl.read_text().splitlines()
    outside_jsonl.write_text(lines[0] + "\n" + lines[line - 1] + "\n")
    with pytest.raises(ValueError, match=r"train\.jsonl:2: video .* outside the data folder .*confine_videos"):
        read_jsonl(outside_jsonl, "skip", confine=True)  # a policy refusal, never skipped


def test_confine_accepts_the_paths_inside(outside_jsonl):
    """With confine, a video inside the data folder is still accepted."""
    lines = outside_jsonl.read_text().splitlines()
    outside_jsonl.write_text(lines[0] + "\n")
    assert [r.line for r in read_jsonl(outside_jsonl, confine=True)[0]] == [1]


def test_a_decode_failure_names_the_jsonl_file_and_line(toy_jsonl, tmp_path):
    """A video that breaks after the header check raises a DataError naming the jsonl file, the line and the video."""
    root = tmp_path / "copy"
    shutil.copytree(toy_jsonl.parent, root)
    records, _ = read_jsonl(root / toy_jsonl.name)
    records[1].video.write_bytes(b"garbage" * 100)  # broken after the header check, as a mid-run failure
    ds = VideoQADataset(records, build_word_tokenizer(), "qwen2_5_vl", sampling=SamplingConfig(num_frames=FRAMES),
                        min_pixels=PIXELS, max_pixels=PIXELS)
    with pytest.raises(DataError, match=rf"{re.escape(str(root / toy_jsonl.name))}:2: video .* failed to decode"):
        ds[1]
