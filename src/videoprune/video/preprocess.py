"""Per-family preprocessing of sampled frames into the exact tensors HF video models take, without torchvision.

The rules are those of transformers 5.x's processors (read from ``models/qwen2_vl/
image_processing_pil_qwen2_vl.py``, ``video_processing_qwen2_vl.py``, ``qwen3_vl/
video_processing_qwen3_vl.py``, ``llava_onevision/video_processing_llava_onevision.py``), computed
the way the PIL ("slow") image processors compute them: PIL bicubic resize of uint8 RGB,
``x * (1/255)`` in float64 cast to float32, then ``(x - mean) / std`` in float32. HF's video
processors use torchvision's resize instead, whose bicubic differs from PIL's by a few 1/255
steps; the shapes, layout and token counts are identical.

With ``device=...`` the same steps run batched in torch on that device
(:mod:`~videoprune.video.device_preprocess`): identical shapes, grids and layout, pixels within
2 uint8 steps of PIL, differing on about 1 in 10^4 to 10^3 pixels (docs/video.md gives the bound).

Each family's :class:`FamilySpec` (defined in :mod:`~videoprune.video.spec`, re-exported here) lives
in its record (``videoprune/models/<family>.py``);
:data:`FAMILIES` and :func:`get_family` read them from the registry, and nothing here branches
on a family. Molmo2 (not a prompt family here) has its own :func:`preprocess_molmo2`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from . import device_preprocess as dp
from .decode import Clip, VideoError
from .spec import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, FamilySpec

__all__ = [
    "FamilySpec",
    "FAMILIES",
    "VideoTensors",
    "get_family",
    "smart_resize",
    "smart_resize_qwen3",
    "target_size",
    "preprocess",
    "Molmo2Video",
    "preprocess_molmo2",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "IMAGENET_STANDARD_MEAN",
    "IMAGENET_STANDARD_STD",
]


# --------------------------------------------------------------------------------------------
# resize rules (copied from transformers 5.23, qwen2_vl / qwen3_vl smart_resize)
# --------------------------------------------------------------------------------------------
def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL size rule: (h, w) multiples of ``factor``, ``h * w`` in [min_pixels, max_pixels], aspect kept."""
    if max(height, width) / min(height, width) > 200:
        raise VideoError(f"aspect ratio must be below 200, got {max(height, width) / min(height, width):.1f}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def smart_resize_qwen3(
    num_frames: int, height: int, width: int, temporal_factor: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Qwen3-VL video size rule: like :func:`smart_resize` but the pixel budget covers all frames.

    HF raises when ``num_frames < temporal_factor``; we treat such clips as padded to
    ``temporal_factor`` frames (what patchify does to them anyway).
    """
    num_frames = max(num_frames, temporal_factor)
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise VideoError(f"aspect ratio must be below 200, got {max(height, width) / min(height, width):.1f}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


# --------------------------------------------------------------------------------------------
# family specs
# --------------------------------------------------------------------------------------------
class _RegisteredSpecs(Mapping):
    """``name -> FamilySpec`` of every registered family with a spec, read from the family registry.

    Read lazily (on first use), so that this module never imports :mod:`videoprune.models` at
    import time: importing the records (which import :mod:`~videoprune.video.spec`) loads this
    package, so ``models`` is only half loaded while this module runs.
    """

    def _specs(self) -> dict[str, FamilySpec]:
        from ..models.registry import FAMILIES as RECORDS  # noqa: PLC0415  (see the class docstring)

        return {f.name: f.spec for f in RECORDS if f.spec is not None and f.spec.name == f.name}

    def __getitem__(self, name: str) -> FamilySpec:
        return self._specs()[name]

    def __iter__(self):
        return iter(self._specs())

    def __len__(self) -> int:
        return len(self._specs())

    def __repr__(self) -> str:
        return repr(self._specs())


#: ``name -> FamilySpec`` of the prompt families, from the records in ``videoprune/models/<family>.py``.
FAMILIES: Mapping[str, FamilySpec] = _RegisteredSpecs()


def get_family(family: str | FamilySpec | None = None) -> FamilySpec:
    """Look a family up by name or HF ``model_type``; a FamilySpec passes through, None is the default family.

    Raises ValueError for a model_type without a preprocessing spec (Molmo2 has its own
    :func:`preprocess_molmo2`) or not registered at all.
    """
    if isinstance(family, FamilySpec):
        return family
    from ..models.registry import DEFAULT_FAMILY, FAMILIES_BY_TYPE  # noqa: PLC0415

    record = FAMILIES_BY_TYPE.get(DEFAULT_FAMILY if family is None else family)
    if record is None or record.spec is None:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    return record.spec


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
@dataclass
class VideoTensors:
    """Model-ready tensors for one video, plus what the prompt needs.

    Attributes:
        pixel_values_videos: Qwen: ``(T' * H * W, C * tp * p * p)`` float32 rows in order
            (t, h / merge, w / merge, merge, merge); LLaVA-OV: ``(1, T, C, H, W)`` float32.
        video_grid_thw: Qwen: ``(1, 3)`` int64 ``(T', H, W)`` in patches (T' = ceil(T / tp));
            None for LLaVA-OV.
        second_per_grid_ts: Qwen2.5-VL: ``(1,)`` float32 seconds covered by one temporal patch
            (``tp / sampled_fps``); None otherwise.
        grid_timestamps: seconds of each temporal slice, ``(T',)``: mean time of the first and
            last frame in the slice, padding frames repeating the last time (Qwen3-VL's rule).
        resized_hw: (height, width) of every frame after resizing, in pixels.
        family: the spec used.
    """

    pixel_values_videos: torch.Tensor
    video_grid_thw: torch.Tensor | None
    second_per_grid_ts: torch.Tensor | None
    grid_timestamps: list[float]
    resized_hw: tuple[int, int]
    family: FamilySpec

    @property
    def tokens_per_frame(self) -> int:
        """LLM tokens of one temporal slice (Qwen: H*W/merge^2; LLaVA-OV: pooled side^2)."""
        if self.video_grid_thw is None:
            return self.family.llava_pooled_side**2
        _, h, w = (int(v) for v in self.video_grid_thw[0])
        return h * w // self.family.merge_size**2

    @property
    def temporal_slices(self) -> int:
        """T' (Qwen) or T (LLaVA-OV): how many token groups of :attr:`tokens_per_frame` there are."""
        if self.video_grid_thw is None:
            return int(self.pixel_values_videos.shape[1])
        return int(self.video_grid_thw[0, 0])

    @property
    def num_video_tokens(self) -> int:
        """Placeholder tokens the LLM sees for this video (LLaVA-OV adds one newline token)."""
        extra = 1 if self.video_grid_thw is None else 0
        return self.tokens_per_frame * self.temporal_slices + extra

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The keyword arguments the HF model's forward takes for this video."""
        out = {"pixel_values_videos": self.pixel_values_videos}
        if self.video_grid_thw is not None:
            out["video_grid_thw"] = self.video_grid_thw
        if self.second_per_grid_ts is not None:
            out["second_per_grid_ts"] = self.second_per_grid_ts
        return out


# --------------------------------------------------------------------------------------------
# the steps
# --------------------------------------------------------------------------------------------
def target_size(spec: FamilySpec, num_frames: int, height: int, width: int) -> tuple[int, int]:
    """``(height, width)`` the frames of a ``num_frames`` clip are resized to under ``spec``'s resize rule.

    The one rule preprocessing, the bundle's token estimate and ``analyze`` share.
    """
    factor = spec.patch_size * spec.merge_size
    if spec.resize == "qwen2":
        return smart_resize(height, width, factor, spec.min_pixels, spec.max_pixels)
    if spec.resize == "qwen3":
        return smart_resize_qwen3(
            num_frames, height, width, spec.temporal_patch_size, factor, spec.min_pixels, spec.max_pixels
        )
    if spec.resize == "fixed":
        return spec.size
    raise ValueError(f"unknown resize rule {spec.resize!r}")


def _resize_pil(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` -> uint8 ``(T, h, w, 3)``, PIL bicubic per frame (frames already ``size`` pass through)."""
    from PIL import Image  # noqa: PLC0415  (lazy: optional dependency)

    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), resample=Image.Resampling.BICUBIC)) for f in frames])


def _resize_normalize(frames: np.ndarray, size: tuple[int, int], mean, std) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` -> float32 ``(T, 3, h, w)``, exactly as HF's PIL backend does it.

    Resizing is PIL bicubic per frame; rescale + normalise depend only on (channel, byte value),
    so they are one 3 x 256 lookup table computed with HF's arithmetic (float64 rescale, cast to
    float32, then ``(x - mean) / std`` in float32): the same bits as applying it to every pixel.
    """
    h, w = size
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    resized = _resize_pil(frames, size)
    values = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    lut = (values[None, :] - mean[:, None]) / std[:, None]  # (3, 256)
    out = np.empty((frames.shape[0], 3, h, w), dtype=np.float32)
    for c in range(3):
        out[:, c] = lut[c][resized[..., c]]
    return out


def _patchify(video: np.ndarray, spec: FamilySpec) -> tuple[np.ndarray, tuple[int, int, int]]:
    """``(T, C, H, W)`` -> rows ``(T' * gh * gw, C * tp * p * p)``, Qwen's layout; pads T by repeating the last frame."""
    tp, p, m = spec.temporal_patch_size, spec.patch_size, spec.merge_size
    if pad := -video.shape[0] % tp:
        video = np.concatenate([video, np.repeat(video[-1:], pad, axis=0)])
    t, c, h, w = video.shape
    gt, gh, gw = t // tp, h // p, w // p
    x = video.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
    # (gt, gh/m, gw/m, m, m, C, tp, p, p): the permute of Qwen2VLVideoProcessor.patchify
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return np.ascontiguousarray(x).reshape(gt * gh * gw, c * tp * p * p), (gt, gh, gw)


def _grid_timestamps(timestamps: np.ndarray, tp: int) -> list[float]:
    ts = list(map(float, timestamps))
    if len(ts) % tp:
        ts.extend([ts[-1]] * (tp - len(ts) % tp))
    return [(ts[i] + ts[i + tp - 1]) / 2 for i in range(0, len(ts), tp)]


def _checked_frames(frames: np.ndarray) -> np.ndarray:
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise VideoError(f"expected (T, H, W, 3) frames with T >= 1, got shape {frames.shape}")
    return frames


def _on_device(frames: np.ndarray, size: tuple[int, int], mean, std, device: torch.device, pad_to: int = 1) -> torch.Tensor:
    """The device twin of :func:`_resize_normalize` (T padded to ``pad_to`` by repeating the last frame)."""
    x = dp.frames_to_device(frames, device, pad_to_multiple=pad_to)
    return dp.normalize(dp.resize_like_pil(x, size), mean, std)


def preprocess(
    clip: Clip,
    family: str | FamilySpec | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    device: str | torch.device | None = None,
) -> VideoTensors:
    """Turn sampled frames into the tensors the family's HF model takes (see :class:`VideoTensors`).

    Args:
        clip: frames from :func:`~videoprune.video.decode` or :func:`~videoprune.video.clip_from_frames`.
        family: a name in :data:`FAMILIES` / an HF ``model_type``, or a :class:`FamilySpec`;
            None: the default family (``videoprune.models.DEFAULT_FAMILY``, Qwen2-VL).
        min_pixels, max_pixels: override the family's pixel budget (Qwen families; pixels per
            frame for Qwen2/2.5-VL, over all frames for Qwen3-VL, as in HF).
        device: None (default): PIL on the CPU, exactly HF's PIL image processors. A torch
            device ("cuda", "cuda:1", "cpu", ...): the uint8 frames are copied there once and
            resized, normalised and patchified in one batched torch pass; every returned tensor
            is on that device, shapes, grids and timestamps are those of the CPU path, pixel
            values within the tolerance docs/video.md states. A device that cannot hold data
            here raises ValueError.
    """
    spec = get_family(family).with_pixels(min_pixels, max_pixels)
    dev = None if device is None else dp.resolve_device(device)
    frames = _checked_frames(clip.frames)
    height, width = frames.shape[1:3]
    size = target_size(spec, frames.shape[0], height, width)
    if spec.layout == "stack":
        if dev is None:
            pixels = torch.from_numpy(_resize_normalize(frames, size, spec.mean, spec.std))
        else:
            pixels = _on_device(frames, size, spec.mean, spec.std, dev)
        return VideoTensors(pixels.unsqueeze(0), None, None, [float(t) for t in clip.timestamps], size, spec)
    if dev is None:
        rows, grid = _patchify(_resize_normalize(frames, size, spec.mean, spec.std), spec)
        rows = torch.from_numpy(rows)
    else:
        video = _on_device(frames, size, spec.mean, spec.std, dev, pad_to=spec.temporal_patch_size)
        rows, grid = dp.patchify(video, spec.temporal_patch_size, spec.patch_size, spec.merge_size)
    spg = None
    if spec.second_per_grid_ts:
        spg = torch.tensor([spec.temporal_patch_size / clip.sampled_fps], dtype=torch.float32, device=dev)
    return VideoTensors(
        pixel_values_videos=rows,
        video_grid_thw=torch.tensor([grid], dtype=torch.long, device=dev),
        second_per_grid_ts=spg,
        grid_timestamps=_grid_timestamps(clip.timestamps, spec.temporal_patch_size),
        resized_hw=size,
        family=spec,
    )


# --------------------------------------------------------------------------------------------
# Molmo2 (its ViT takes fixed-size squares; prompts are not built here)
# --------------------------------------------------------------------------------------------
MOLMO2_IMAGE_SIZE = (378, 378)  # Molmo2 vision_config.image_size (height, width)
MOLMO2_PATCH_SIZE = 14  # vision_config.patch_size
MOLMO2_POOL = 3  # pool x pool patches per LLM token


@dataclass
class Molmo2Video:
    """Molmo2 video tensors of one video (what ``Molmo2VideoProcessor`` returns, in shape and layout).

    Every frame is resized to the ViT's ``image_size`` and cut into ``p x p`` patches (rows of
    ``p * p * 3`` values, channel last); ``pool x pool`` windows of patches, in raster order, form
    the LLM tokens (``video_token_pooling`` lists their patch indices; for one video they are the
    same in every transformers release, see :mod:`videoprune.models.molmo2_layout`).

    Attributes:
        pixel_values_videos: ``(T, Hp * Wp, p * p * 3)`` float32.
        video_token_pooling: ``(T * H' * W', pool * pool)`` int64, indices into the ``T * Hp * Wp`` patches.
        video_grids: ``(1, 3)`` int64 ``(T, H', W')`` with ``H' = Hp / pool``.
        tokens_per_frame: ``H' * W'`` (81 at 378 px, patch 14, pool 3).
        temporal_slices: ``T``.
    """

    pixel_values_videos: torch.Tensor
    video_token_pooling: torch.Tensor
    video_grids: torch.Tensor
    tokens_per_frame: int
    temporal_slices: int

    @property
    def num_video_tokens(self) -> int:
        """LLM tokens of the whole video (frame start/end and timestamp tokens not counted)."""
        return self.tokens_per_frame * self.temporal_slices

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The video keyword arguments of Molmo2's forward."""
        return {"pixel_values_videos": self.pixel_values_videos, "video_token_pooling": self.video_token_pooling,
                "video_grids": self.video_grids}


def preprocess_molmo2(
    clip: Clip | np.ndarray,
    image_size: tuple[int, int] = MOLMO2_IMAGE_SIZE,
    patch_size: int = MOLMO2_PATCH_SIZE,
    pool: int = MOLMO2_POOL,
    device: str | torch.device | None = None,
) -> Molmo2Video:
    """Resize (PIL bicubic) + normalise (mean = std = 0.5) + patchify every frame for Molmo2's ViT.

    This is what ``videoprune bench speed`` feeds Molmo2. HF's
    ``Molmo2VideoProcessor`` resizes bilinear (torchvision, no antialias) instead of bicubic: the
    shapes, layout and indices are the same, the pixel values are not.

    Args:
        clip: a :class:`Clip` or uint8 ``(T, H, W, 3)`` frames.
        image_size, patch_size: ``model.config.vision_config.image_size`` / ``.patch_size``
            (height, width in pixels; both sides multiples of ``patch_size * pool``).
        pool: patches per token side.
        device: None: PIL on the CPU. A torch device: batched torch pass there, all tensors on
            it, the same shapes and indices, pixels within the tolerance of :func:`preprocess`.
    """
    dev = None if device is None else dp.resolve_device(device)
    frames = _checked_frames(clip.frames if isinstance(clip, Clip) else np.asarray(clip))
    (h, w), p = (int(x) for x in image_size), int(patch_size)
    if h % (p * pool) or w % (p * pool):
        raise ValueError(f"image_size {h}x{w} must be a multiple of patch_size * pool = {p * pool}")
    if dev is None:
        x = torch.from_numpy(_resize_normalize(frames, (h, w), IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD))
    else:
        x = _on_device(frames, (h, w), IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, dev)
    from ..models.molmo2_layout import video_pooling  # noqa: PLC0415

    t, hp, wp = x.shape[0], h // p, w // p
    rows = x.view(t, 3, hp, p, wp, p).permute(0, 2, 4, 3, 5, 1).reshape(t, hp * wp, p * p * 3)
    # one video: its indices are the same in both of transformers' layouts, so none is looked up
    pooling = video_pooling([t], hp, wp, pool, per_video=False).to(dev)
    return Molmo2Video(rows.contiguous(), pooling, torch.tensor([[t, hp // pool, wp // pool]], device=dev),
                       (hp // pool) * (wp // pool), t)
