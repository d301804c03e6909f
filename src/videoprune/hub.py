"""Where a ``--model`` name points: an embedded model, a local checkpoint folder or a Hugging Face hub id, decided at once.

Every ``name_or_path`` that reaches ``from_pretrained`` goes through :func:`resolve` first, so
``default`` / ``default-uptrained`` mean the embedded models everywhere, a mistyped path fails
naming the path, and a hub id that is neither cached nor reachable fails in about a second
instead of after transformers' retries (about 50 s without network). Nothing here imports torch
or transformers; ``huggingface_hub`` is imported only to look a hub id up in the local cache.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["ASSETS", "EMBEDDED", "HubUnavailable", "is_embedded", "looks_like_path", "resolve"]

ASSETS = Path(__file__).parent / "assets"
#: ``--model`` names of the models shipped inside the package
EMBEDDED = {"default": ASSETS / "default", "default-uptrained": ASSETS / "default-uptrained"}

#: seconds one TCP connect to the hub (or the proxy) may take before the hub counts as unreachable
CONNECT_TIMEOUT_S = 1.5
# "name" or "namespace/name" of [A-Za-z0-9_.-], as the hub accepts them (huggingface_hub's validate_repo_id)
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)?[A-Za-z0-9_][A-Za-z0-9_.-]{0,95}$")
_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json", ".gguf", ".onnx", ".git")
_TRUE = ("1", "on", "yes", "true")


class HubUnavailable(ValueError):
    """A hub id that is not in the local cache while the hub cannot be reached (or is switched off)."""


def is_embedded(name) -> bool:
    """True for ``default`` / ``default-uptrained`` and for the embedded folders themselves."""
    if isinstance(name, str) and name in EMBEDDED:
        return True
    try:
        return any(Path(name).resolve() == p.resolve() for p in EMBEDDED.values())
    except (TypeError, OSError):
        return False


def looks_like_path(name: str) -> bool:
    """True when ``name`` cannot be a hub id, so it must be meant as a local path.

    Paths: ``/...``, ``./...``, ``../...``, ``~...``, anything with a backslash or two slashes,
    a trailing slash, a file suffix (``.safetensors``, ``.json``, ...), or any other string the
    hub would refuse as ``name`` / ``namespace/name``.
    """
    if name.startswith(("/", ".", "~")) or "\\" in name or name.endswith("/") or name.count("/") > 1:
        return True
    if name.lower().endswith(_FILE_SUFFIXES) or "--" in name or ".." in name:
        return True
    return not _REPO_ID.match(name)


def _offline() -> str | None:
    """The environment variable that switches the hub off, if one does."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return var
    return None


def _hub_address() -> tuple[str, int]:
    """(host, port) a connection to the hub goes to first: the HTTPS proxy if one is set, else the endpoint."""
    proxy = next((os.environ[v] for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(v)),
                 None)
    url = urlparse(proxy if proxy and "://" in proxy else f"http://{proxy}" if proxy
                   else os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def _hub_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """One TCP connect to the hub (or its proxy), at most ``timeout`` seconds; no HTTP request, no retries."""
    host, port = _hub_address()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cache_dir(cache_dir) -> str:
    if cache_dir is not None:
        return str(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def _cached_snapshot(repo_id: str, cache_dir: str) -> str | None:
    """The local snapshot folder of ``repo_id`` (with a config.json) in the HF cache, or None; never online."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        folder = snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True)
    except Exception:  # noqa: BLE001 - LocalEntryNotFoundError, HFValidationError, ...: not cached
        return None
    return folder if os.path.isfile(os.path.join(folder, "config.json")) else None


def resolve(name_or_path, *, what: str = "model", cache_dir=None) -> str:
    """The string to pass to ``from_pretrained`` for ``name_or_path``; raises at once if it cannot load.

    - ``"default"`` / ``"default-uptrained"`` -> the embedded checkpoint folder
      (:class:`FileNotFoundError` if this installation lacks it).
    - an existing local path -> that path (``~`` expanded).
    - a path that does not exist (see :func:`looks_like_path`) -> :class:`FileNotFoundError`
      naming the path tried.
    - a hub id -> the id when the hub answers one TCP connect (transformers downloads or
      revalidates it); the cached snapshot folder when the hub is switched off
      (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``) or unreachable; else
      :class:`HubUnavailable` (a ValueError) naming the id, the cache looked in and what to do.

    ``what`` names the thing in messages (``"model"``, ``"tokenizer"``); ``cache_dir``: the HF
    hub cache to look in (default: ``HF_HUB_CACHE`` or ``$HF_HOME/hub``, read at call time).
    """
    if isinstance(name_or_path, Path) or hasattr(name_or_path, "__fspath__"):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ValueError(f"{what} must be a checkpoint path, a hub id or 'default', got {name_or_path!r}")
    name = name_or_path.strip()
    if name in EMBEDDED:
        folder = EMBEDDED[name]
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"the embedded {what} {name!r} is not in this installation ({folder}); "
                                    "pass --model ID_OR_PATH (a hub id or a local checkpoint)")
        return str(folder)
    local = Path(name).expanduser()
    if local.exists():
        return str(local)
    if looks_like_path(name):
        raise FileNotFoundError(f"{what} path {name!r} does not exist (looked for {local.absolute()})")
    cache = _cache_dir(cache_dir)
    offline = _offline()
    reachable = offline is None and _hub_reachable()
    if reachable:
        return name
    snapshot = _cached_snapshot(name, cache)
    if snapshot is not None:
        return snapshot
    host, port = _hub_address()
    why = f"{offline} is set" if offline else f"no connection to {host}:{port} within {CONNECT_TIMEOUT_S:g} s"
    raise HubUnavailable(
        f"{what} {name!r} is not a local folder (looked for {local.absolute()}), not in the local Hugging Face "
        f"cache ({cache}), and the hub is unreachable ({why}); pass a downloaded checkpoint with "
        "--model /path/to/checkpoint, or set HF_HOME to the cache that holds it")
