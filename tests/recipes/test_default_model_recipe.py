"""The default model's recipe (recipes/train_default_model.py): the extra-clip training mix."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("av")

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "train_default_model.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("train_default_model", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from videoprune.data.synthetic import write_dataset

    folder = tmp_path_factory.mktemp("data")
    write_dataset(folder, "train", 4, 0, num_frames=12, size=96, progress=False, qtypes=["moved"])
    return folder


def _types(jsonl: Path) -> Counter:
    return Counter(json.loads(line)["type"] for line in jsonl.read_text().splitlines())


def test_extra_weight_repeats_the_first_type_and_paths_resolve(recipe, data, tmp_path):
    """--extra-weight N lists the first extra type's clips N times in the training mix, the others once, and every
    rebased video path points at a real clip."""
    mix = recipe._with_extra(data, tmp_path / "out", ["direction", "flash_count"], 4, 1, weight=3)
    assert _types(mix) == Counter({"moved": 4, "direction": 2 * 3, "flash_count": 2})
    for line in mix.read_text().splitlines():  # every rebased path points at a real clip
        assert (mix.parent / json.loads(line)["video"]).resolve().is_file()


def test_an_existing_extra_folder_of_other_types_is_refused(recipe, data, tmp_path):
    """Reusing an extra folder written for other question types, or an --extra-weight below 1, stops the recipe instead
    of training on the wrong mix."""
    recipe._with_extra(data, tmp_path / "a", ["direction", "flash_count"], 4, 1)
    with pytest.raises(SystemExit, match="already holds 4 clips"):
        recipe._with_extra(data, tmp_path / "b", ["direction"], 4, 1)
    with pytest.raises(SystemExit, match="--extra-weight"):
        recipe._with_extra(data, tmp_path / "c", ["direction", "flash_count"], 4, 1, weight=0)


def test_extra_dir_keeps_a_second_set_of_extra_clips_beside_the_first(recipe, data, tmp_path):
    """--extra-dir: the training-only direction_single clips go to their own folder; DATA/extra is untouched."""
    recipe._with_extra(data, tmp_path / "a", ["direction", "flash_count"], 4, 1)
    before = (data / "extra" / "train.jsonl").read_text()
    mix = recipe._with_extra(data, tmp_path / "b", ["direction_single", "direction"], 4, 1, folder="extra_single")
    assert _types(mix) == Counter({"moved": 4, "direction_single": 2, "direction": 2})
    assert (data / "extra" / "train.jsonl").read_text() == before
    for line in mix.read_text().splitlines():
        assert (mix.parent / json.loads(line)["video"]).resolve().is_file()


def test_extra_only_leaves_the_base_training_clips_out(recipe, data, tmp_path):
    """--extra-only: a single-skill stage trains on the extra clips alone."""
    mix = recipe._with_extra(data, tmp_path / "a", ["direction_single", "direction"], 4, 1, folder="extra_single",
                             only=True)
    assert _types(mix) == Counter({"direction_single": 2, "direction": 2})
