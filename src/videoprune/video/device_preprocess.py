"""Batched torch preprocessing on any device: PIL's resize mimicked with ``F.interpolate``, then normalise and patchify.

:func:`~videoprune.video.preprocess` (and :func:`~videoprune.video.preprocess_molmo2`) call these
when given a ``device``. The decoded uint8 frames are copied to the device once; every frame is
resized, normalised and patchified there in one batched pass, so the result lands where the model
runs and the CPU does none of the per-pixel work.

How close to the PIL path it is. PIL's bicubic resize (a = -0.5, widened for downscaling) is two
1-D passes, each rounded to uint8; ``F.interpolate(mode="bicubic", antialias=True)`` computes
the same filter (it is ported from PIL). We run it as the same two passes, in PIL's order, and
round half up and clamp to [0, 255] after each, as PIL does, so the pixels differ only
where PIL's 22-bit fixed-point weights tip a sum across a rounding boundary that float32 does not
(1 pixel in 10^4 to 10^3 on real footage, by one uint8 step, rarely 2). Normalising is then bit-exact:
``x / 255`` in float32 equals HF's float64 ``x * (1/255)`` cast to float32 for all 256 values,
and ``(x - mean) / std`` is the same float32 arithmetic. Shapes, grids and layout are identical.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "resolve_device",
    "frames_to_device",
    "resize_like_pil",
    "normalize",
    "patchify",
]

def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` that can hold data here; a one-line ValueError otherwise."""
    try:
        dev = torch.device(device)
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError, NotImplementedError, TypeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot preprocess on device {device!r}: {reason}") from None
    if dev.type == "meta":
        raise ValueError("cannot preprocess on device 'meta': meta tensors hold no pixel values")
    return dev


def frames_to_device(frames: np.ndarray, device: torch.device, pad_to_multiple: int = 1) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> uint8 ``(T', 3, H, W)`` on ``device``, one host-to-device copy.

    ``T'`` is ``T`` rounded up to ``pad_to_multiple`` by repeating the last frame (what Qwen's
    patchify does to the normalised frames; doing it on the uint8 frames gives the same values).
    """
    with warnings.catch_warnings():  # read-only frames are fine: they are only read
        warnings.simplefilter("ignore", UserWarning)
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(device, non_blocking=True)
    if pad := -x.shape[0] % pad_to_multiple:
        x = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])])
    return x.permute(0, 3, 1, 2)


def _round_like_pil(x: torch.Tensor) -> torch.Tensor:
    # PIL: (sum + 2^21) >> 22 then clip to 0..255, i.e. round half up and clamp
    return x.add_(0.5).floor_().clamp_(0, 255)


def _two_passes(x: torch.Tensor, size: tuple[int, int], vertical_first: bool) -> torch.Tensor:
    h, w = size
    steps = [(h, x.shape[-1]), (h, w)] if vertical_first else [(x.shape[-2], w), (h, w)]
    for step in steps:
        if tuple(x.shape[-2:]) != step:  # PIL skips a pass that keeps its side's length
            x = _round_like_pil(F.interpolate(x, size=step, mode="bicubic", antialias=True, align_corners=False))
    return x


@functools.cache
def _pil_can_go_vertical_first() -> bool:
    """Whether the installed Pillow orders its passes by the rule of :func:`_vertical_first`.

    Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many
    pixels as the width does; older Pillow always ran horizontal first. One 8x8 -> 16x2 resize,
    where the two disagree, tells which. Without Pillow we follow Pillow 13.
    """
    try:
        from PIL import Image  # noqa: PLC0415  (lazy: optional dependency)
    except ImportError:
        return True
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    ref = torch.from_numpy(np.array(Image.fromarray(img).resize((16, 2), resample=Image.Resampling.BICUBIC)))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    err = [(_two_passes(x, (2, 16), v)[0].permute(1, 2, 0) - ref).abs().sum() for v in (False, True)]
    return bool(err[1] < err[0])


def _vertical_first(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> bool:
    (H, W), (h, w) = in_hw, out_hw  # noqa: N806
    return h < H and (H - h) > 2 * (W - w) and _pil_can_go_vertical_first()


def resize_like_pil(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 or float ``(T, 3, H, W)`` -> float32 ``(T, 3, h, w)`` holding integers in [0, 255], PIL bicubic.

    Two 1-D passes in the order the installed Pillow runs them (horizontal first, except where
    Pillow 13 goes vertical first: the height shrinks by more than twice as many pixels as the
    width), each skipped when that side keeps its length and each rounded as PIL rounds.
    docs/video.md states the tolerance against PIL.
    """
    x = frames.float()
    return _two_passes(x, size, _vertical_first(tuple(x.shape[-2:]), size))


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """float32 ``(T, 3, h, w)`` in 0..255 -> ``(x / 255 - mean) / std`` per channel, in place; HF's float32 bits.

    Every divisor is a tensor on ``x``'s device: CUDA turns division by a Python or CPU scalar
    into multiplication by its reciprocal, which is 1 ulp off HF's values on many pixels.
    """
    consts = torch.tensor([255.0, *mean, *std], dtype=torch.float32).to(x.device, non_blocking=True)
    d255, mean, std = consts[:1].view(1, 1, 1, 1), consts[1:4].view(1, 3, 1, 1), consts[4:].view(1, 3, 1, 1)
    return x.div_(d255).sub_(mean).div_(std)


def patchify(video: torch.Tensor, tp: int, p: int, m: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``(T, C, H, W)`` with ``T`` a multiple of ``tp`` -> rows ``(T/tp * gh * gw, C * tp * p * p)``.

    The layout of ``preprocess._patchify`` (Qwen2VLVideoProcessor's permute), as tensor views plus
    one contiguous copy on the tensor's device.
    """
    t, c, h, w = video.shape
    gt, gh, gw = t // tp, h // p, w // p
    x = video.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * tp * p * p), (gt, gh, gw)
