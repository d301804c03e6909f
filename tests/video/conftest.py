"""Fixtures for the video tests."""

import pytest

from clips import write_clip


@pytest.fixture
def mp4_clip(tmp_path):
    return write_clip(tmp_path / "clip.mp4")
