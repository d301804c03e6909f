"""Scorer weights on disk: safetensors separate from the base model, stamped with a config fingerprint.

The scorer only makes sense on the encoder it was trained on (same width, same patch grid, same
block ``prune_at``, same merge window). :func:`fingerprint` hashes exactly those facts; the hash
and the facts themselves go into the safetensors metadata, and :func:`load_scorer_state`
refuses a file whose fingerprint differs from the model it is loaded into.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from ..validate import check_regular_file

__all__ = ["FINGERPRINT_KEY", "SCORER_FILE", "SETTINGS_FILE", "fingerprint", "load_scorer_state", "save_scorer_state"]

#: file names of a trained scorer beside its model: the weights, and the STTSConfig it was trained
#: with (``{"stts": {...}}``); written by ``videoprune train --method stts``, read by ModelBundle
SCORER_FILE = "stts_scorer.safetensors"
SETTINGS_FILE = "stts_config.json"

FINGERPRINT_KEY = "videoprune.stts.fingerprint"
_FIELDS_KEY = "videoprune.stts.fingerprint_fields"
_ARCH_KEY = "videoprune.stts.scorer"
FORMAT_VERSION = "1"


def fingerprint(fields: dict[str, Any]) -> str:
    """sha256 (hex) of ``fields`` as canonical JSON (sorted keys, no spaces)."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def save_scorer_state(path: str, state: dict[str, torch.Tensor], fields: dict[str, Any], arch: dict[str, Any]) -> None:
    """Write ``state`` (the scorer's ``state_dict``) to ``path`` with the fingerprint of ``fields``.

    ``arch`` (width, pool, mlp_hidden, attn_dim) is stored too, so a mismatch in the scorer's own
    shape is reported by name rather than as a tensor-shape error.
    """
    from safetensors.torch import save_file

    if not isinstance(path, str) or not path:
        raise ValueError(f"path must be a non-empty str, got {path!r}")
    meta = {
        FINGERPRINT_KEY: fingerprint(fields),
        _FIELDS_KEY: json.dumps(fields, sort_keys=True, default=str),
        _ARCH_KEY: json.dumps(arch, sort_keys=True),
        "videoprune.stts.format": FORMAT_VERSION,
    }
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, path, metadata=meta)


def load_scorer_state(path: str, fields: dict[str, Any], arch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Read a scorer file, checking its fingerprint against ``fields`` and its shape against ``arch``.

    Raises:
        ValueError: one line naming the file: ``scorer file not found: <path>``, ``not a regular
            file: <path> (...)`` (a directory, FIFO or device), ``scorer file is corrupt: <path>``
            (truncated or not safetensors), not a videoprune scorer file, fingerprint mismatch
            (the message names the differing fields), or scorer shape mismatch.
    """
    from safetensors import SafetensorError, safe_open

    path = check_regular_file(path, "scorer file")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"scorer file is corrupt: {path} ({reason})") from e
    if FINGERPRINT_KEY not in meta:
        raise ValueError(f"scorer_path {path!r} is not a videoprune STTS scorer file (no fingerprint metadata)")
    if meta[FINGERPRINT_KEY] != fingerprint(fields):
        saved = json.loads(meta.get(_FIELDS_KEY, "{}"))
        diff = {k: (saved.get(k), fields.get(k)) for k in sorted(set(saved) | set(fields)) if saved.get(k) != fields.get(k)}
        detail = ", ".join(f"{k}: saved {a!r} vs model {b!r}" for k, (a, b) in diff.items()) or "fields hash differently"
        raise ValueError(f"scorer_path {path!r} was trained for a different model/config (fingerprint mismatch: {detail})")
    saved_arch = json.loads(meta.get(_ARCH_KEY, "{}"))
    if saved_arch != arch:
        raise ValueError(f"scorer_path {path!r} holds a scorer of shape {saved_arch}, but the config asks for {arch} "
                         "(set STTSConfig mlp_hidden / attn_dim to the saved values)")
    return state
