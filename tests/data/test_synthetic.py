"""Rules of the synthetic temporal video-QA generator."""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pytest

from videoprune.data.synthetic import (
    QUESTION_TYPES,
    TRAIN_ONLY_TYPES,
    ObjectTrack,
    Scene,
    answer_from_scene,
    make_scene,
    render_scene,
    vocabulary,
    write_dataset,
)

N_SCENES = 200
#: sha256 of the scenes :func:`_pinned_scenes` generates, taken before make_scene was split into
#: smaller functions; a change means the generated datasets (and every committed result) changed
PINNED_SCENES_SHA256 = "e2857dcd231821f9e60697e8d0be7c1fa393bd7308d42925b47e24be6dc17304"


def _pinned_scenes():
    """120 sampled scenes (every split) plus every question type at three clip lengths and a non-square size."""
    for split, index in itertools.product(("train", "val", "test"), range(40)):
        yield make_scene(split, 5, index)
    for qtype, frames in itertools.product(QUESTION_TYPES + TRAIN_ONLY_TYPES, (12, 16, 24)):
        yield make_scene("train", 1, 3, num_frames=frames, width=128, height=112, qtype=qtype)


def test_generated_scenes_are_bit_identical_to_the_pinned_hash():
    """make_scene's output for fixed (split, seed, index, settings) never changes: its sha256 is pinned."""
    h = hashlib.sha256()
    for scene in _pinned_scenes():
        h.update(json.dumps(scene.to_json(), sort_keys=True).encode())
    assert h.hexdigest() == PINNED_SCENES_SHA256


def test_same_split_seed_index_gives_the_same_clip():
    """Generation is deterministic in (split, seed, index)."""
    a, b = make_scene("train", 3, 7), make_scene("train", 3, 7)
    assert a == b
    assert np.array_equal(render_scene(a), render_scene(b))


def test_train_and_test_scenes_never_coincide():
    """The split is part of the random stream: same seed and index give different scenes."""
    train = {json.dumps(make_scene("train", 0, i).to_json(), sort_keys=True) for i in range(N_SCENES)}
    test = {json.dumps(make_scene("test", 0, i).to_json(), sort_keys=True) for i in range(N_SCENES)}
    assert not train & test


@pytest.mark.parametrize("num_frames", [12, 16, 24])
@pytest.mark.parametrize("qtype", QUESTION_TYPES + TRAIN_ONLY_TYPES)
def test_answers_recomputed_from_scene_state_match(qtype, num_frames):
    """For every question type and clip length, the answer recomputed from per-frame state equals the stored one."""
    for i in range(40):
        scene = make_scene("test", 1, i, qtype=qtype, num_frames=num_frames)
        scene = Scene.from_json(json.loads(json.dumps(scene.to_json())))
        assert answer_from_scene(scene) == scene.answer


def test_every_question_type_is_sampled():
    """Without a forced type, all five question types occur."""
    assert {make_scene("train", 0, i).qtype for i in range(N_SCENES)} == set(QUESTION_TYPES)


def test_direction_single_moves_only_the_named_object():
    """The training-only variant: exactly one object moves, and it is the one the question names."""
    for i in range(40):
        scene = make_scene("train", 0, i, qtype="direction_single")
        movers = [o for o in scene.objects if len(set(o.xy)) > 1]
        assert len(movers) == 1 and f" {movers[0].colour[0]} object " in scene.question
        assert scene.answer in ("left", "right", "up", "down")


def test_direction_keeps_its_second_mover():
    """The test-time direction question (same seeds as above) moves a distractor as well as the named object."""
    for i in range(40):
        assert sum(len(set(o.xy)) > 1 for o in make_scene("train", 0, i, qtype="direction").objects) == 2


def test_the_sampler_never_draws_a_train_only_type():
    """The scene sampler never picks a training-only question type on its own, so test and val stay free of them."""
    assert not {make_scene("test", 0, i).qtype for i in range(N_SCENES)} & set(TRAIN_ONLY_TYPES)


def test_train_only_types_are_refused_outside_train(tmp_path):
    """Asking write_dataset for a training-only question type in the test split is refused."""
    with pytest.raises(ValueError, match="training only"):
        write_dataset(tmp_path, "test", 2, qtypes=["direction_single"], progress=False)


def test_unknown_question_types_are_refused(tmp_path):
    """write_dataset refuses a question type it does not know."""
    with pytest.raises(ValueError, match="qtypes"):
        write_dataset(tmp_path, "train", 2, qtypes=["sideways"], progress=False)


def test_distractors_are_present():
    """Every scene holds three objects of distinct shapes and distinct colours (colours name them)."""
    for i in range(50):
        scene = make_scene("train", 2, i)
        assert len({o.shape for o in scene.objects}) == 3
        assert len({o.colour[0] for o in scene.objects}) == 3


def test_direction_scenes_have_a_second_mover_when_room_allows():
    """Direction questions come with a distracting mover in most scenes."""
    two_movers = sum(
        sum(len(set(o.xy)) > 1 for o in make_scene("train", 0, i, qtype="direction").objects) == 2 for i in range(50)
    )
    assert two_movers >= 40


def _track(visible):
    return ObjectTrack("circle", [(0, 0)] * len(visible), ["red"] * len(visible), visible)


@pytest.mark.parametrize(
    "visible, flashes",
    [
        ([True] * 8, "zero"),
        ([True, False, True, True, True, True, True, True], "one"),
        ([True, False, False, True, False, True, True, True], "two"),
        ([False, False, True, True, True, True, True, True], "zero"),  # appearing is not a flash
        ([True, True, True, True, True, True, False, False], "zero"),  # vanishing for good is not a flash
    ],
)
def test_flash_oracle_counts_off_then_on_again(visible, flashes):
    """A flash is an invisible run that starts after the object was seen and ends with it visible."""
    scene = Scene("flash_count", "how many times did the red object flash ?", "", 112, 112, 8.0, 0, [_track(visible)])
    assert answer_from_scene(scene) == flashes


def test_background_is_static_outside_the_objects():
    """Pixels never covered by an object are identical in every frame (realistic redundancy)."""
    scene = make_scene("train", 0, 5, qtype="colour_change")
    frames = render_scene(scene)
    covered = np.zeros(frames.shape[1:3], dtype=bool)
    for obj in scene.objects:
        for x, y in obj.xy:
            covered[y : y + 24, x : x + 24] = True
    assert (frames[:, ~covered] == frames[:1, ~covered]).all()


def test_the_named_change_is_visible_in_pixels():
    """In a colour-change scene exactly the target's box changes between first and last frame."""
    scene = make_scene("train", 0, 11, qtype="colour_change")
    frames = render_scene(scene).astype(int)
    target = next(o for o in scene.objects if o.colour[0] == scene.answer)
    x, y = target.xy[0]
    diff = np.abs(frames[-1] - frames[0]).sum(-1)
    assert diff[y : y + 24, x : x + 24].sum() > 0
    diff[y : y + 24, x : x + 24] = 0
    assert diff.sum() == 0


def test_written_dataset_decodes_and_matches_jsonl(tmp_path):
    """write_dataset writes real mp4 clips with the stated frame count and a JSONL describing them."""
    av = pytest.importorskip("av")
    jsonl = write_dataset(tmp_path, "val", 3, seed=4, num_frames=12, size=96, progress=False)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 3
    for rec in records:
        with av.open(str(tmp_path / rec["video"])) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == 12 == len(rec["timestamps"])
        assert frames[0].shape == (96, 96, 3)
        assert answer_from_scene(Scene.from_json(rec["scene"])) == rec["answer"]
        assert set(rec["question"].split()) | {rec["answer"]} <= set(vocabulary())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(split="dev"), "split"),
        (dict(num_frames=7), "num_frames"),
        (dict(num_frames=4), "num_frames"),
        (dict(num_frames=10), "num_frames"),
        (dict(width=40), "width"),
        (dict(qtype="count"), "qtype"),
    ],
)
def test_bad_generator_arguments_are_rejected(kwargs, match):
    """make_scene refuses an unknown split, a frame count that is odd or below 12, a frame too narrow for its objects
    and an unknown qtype."""
    with pytest.raises(ValueError, match=match):
        make_scene(**kwargs)


def test_write_dataset_restricts_question_types(tmp_path):
    """qtypes cycles through the given types; an unknown or empty list is refused before writing."""
    pytest.importorskip("av")
    jsonl = write_dataset(tmp_path, "train", 4, seed=2, num_frames=12, size=96, qtypes=["direction", "flash_count"], progress=False)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["type"] for r in records] == ["direction", "flash_count", "direction", "flash_count"]
    assert all(answer_from_scene(Scene.from_json(r["scene"])) == r["answer"] for r in records)
    for bad in (["count"], []):
        with pytest.raises(ValueError, match="qtypes"):
            write_dataset(tmp_path / "bad", "train", 2, qtypes=bad, progress=False)
    assert not (tmp_path / "bad").exists()
