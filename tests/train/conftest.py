"""Fixtures for the training tests: a few synthetic clips written once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("av")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def toy_jsonl(tmp_path_factory):
    """4 synthetic temporal video-QA clips (16 frames, 112x112) and their JSONL."""
    from videoprune.data.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("toy"), "train", num=4, seed=0, progress=False)
