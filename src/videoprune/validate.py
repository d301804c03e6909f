"""One validator per user-facing parameter, shared by the configs, the core functions and the CLI commands.

Every check raises ``ValueError`` (or the ``error`` class given, a ValueError subclass such as
:class:`~videoprune.video.decode.VideoError`) with a one-line message that names the parameter,
the accepted range and the value given. Plain Python: no torch, no transformers.

Ranges (methods.md §1.1-1.2):
  * ``rate`` q in [0, 1): the fraction of each video's tokens dropped (1 would drop frame 0 too).
  * ``threshold`` >= 0, finite: a dissimilarity is ``1 - cos`` in [0, 2] (embedding) or a mean
    absolute pixel difference >= 0 (pixel), so a negative threshold keeps every token; that is
    ``rate = 0``, and is refused rather than accepted as a threshold that selects nothing.
  * ``rate`` and ``threshold`` are exclusive; with neither, the rate is :data:`DEFAULT_RATE`.
  * fractions in [0, 1]; frame counts int >= 1; pixel budgets ``0 <= min_pixels <= max_pixels``.
"""

from __future__ import annotations

import math
import os
import stat

__all__ = [
    "DEFAULT_RATE",
    "check_budget",
    "check_fraction",
    "check_num_frames",
    "check_pixel_budget",
    "check_rate",
    "check_regular_file",
    "check_threshold",
]


#: the pruning rate used when neither a rate nor a threshold is given (methods.md §1.1: EVS's
#: recommended operating point); the one place the number is written
DEFAULT_RATE = 0.75


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def check_rate(value, name: str = "rate", error: type[ValueError] = ValueError) -> float:
    """``value`` as a float in [0, 1) (the EVS / STTS pruning rate)."""
    if not _is_number(value) or math.isnan(value) or not 0.0 <= value < 1.0:
        raise error(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def check_threshold(value, name: str = "threshold", error: type[ValueError] = ValueError) -> float:
    """``value`` as a finite float >= 0 (EVS threshold mode; see the module docstring for why not < 0)."""
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise error(f"{name} must be a finite float >= 0 (dissimilarities are >= 0; a negative threshold "
                    f"would keep every token, which is rate 0), got {value!r}")
    return float(value)


def check_budget(rate, threshold, default: float | None = DEFAULT_RATE,
                 error: type[ValueError] = ValueError) -> tuple[float | None, float | None]:
    """``(rate, threshold)`` validated: at most one of them, never both; ``rate = default`` when neither is given.

    ``default=None`` leaves both None (a caller that picks the rate later, e.g. from a model's
    exported config). The pruning budget of EVS, of the methods table and of every command.
    """
    if rate is not None and threshold is not None:
        raise error(f"rate and threshold are exclusive: give one, not both (rate={rate!r}, threshold={threshold!r})")
    if threshold is not None:
        return None, check_threshold(threshold, error=error)
    if rate is None:
        return default, None
    return check_rate(rate, error=error), None


def check_fraction(value, name: str, error: type[ValueError] = ValueError) -> float:
    """``value`` as a float in [0, 1]."""
    if not _is_number(value) or math.isnan(value) or not 0.0 <= value <= 1.0:
        raise error(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def check_num_frames(value, name: str = "num_frames", upper: int | None = None,
                     error: type[ValueError] = ValueError) -> int:
    """``value`` as an int >= 1 (and <= ``upper`` when given); 0 is an error, never "the default"."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (upper is not None and value > upper):
        span = f"in [1, {upper}]" if upper is not None else ">= 1"
        raise error(f"{name} must be an int {span}, got {value!r}")
    return value


def check_pixel_budget(min_pixels, max_pixels, error: type[ValueError] = ValueError) -> tuple[int | None, int | None]:
    """Pixel budgets (pixels per frame, or per clip for Qwen3-VL): ints, ``0 <= min <= max``, ``max >= 1``.

    Either may be None (the family's default stays)."""
    for name, v, lo in (("min_pixels", min_pixels, 0), ("max_pixels", max_pixels, 1)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise error(f"{name} must be an int >= {lo}, got {v!r}")
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise error(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    return min_pixels, max_pixels


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_regular_file(path, what: str, error: type[ValueError] = ValueError) -> str:
    """``path`` as a str if it is an existing regular file (symlinks followed), else one-line ``error``.

    Messages: ``"{what} not found: {path}"`` and ``"not a regular file: {path} ({kind})"`` for a
    directory, a FIFO, a device (``/dev/zero``) or a socket: reading one of those blocks or never
    ends, so it is refused before it is opened.
    """
    try:
        p = os.fspath(path)
    except TypeError:
        raise error(f"{what} path must be a str or os.PathLike, got {type(path).__name__}") from None
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise error(f"{what} not found: {p}") from None
    except OSError as e:
        raise error(f"{what} cannot be read: {p} ({e.strerror or type(e).__name__})") from None
    if not stat.S_ISREG(mode):
        kind = next((k for test, k in _KINDS if test(mode)), "not a file")
        raise error(f"not a regular file: {p} ({kind})")
    return p
