"""Streaming video decoding with PyAV: open, check limits, sample frames by fps or count, with timestamps.

PyAV (``av``) is imported lazily inside the functions, so importing :mod:`videoprune.video`
costs nothing when it is not installed. Only the sampled frames are ever held in memory: the
file is decoded front to back once and every frame that is not sampled is dropped at once.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..validate import check_num_frames, check_regular_file

__all__ = ["VideoError", "SamplingConfig", "VideoLimits", "Clip", "probe", "sample_indices", "decode", "clip_from_frames"]


class VideoError(ValueError):
    """A video that cannot be used: missing, not a video, corrupt, empty, too large, bad sampling request.

    The message is one line meant for the user, naming the file and what to do.
    """


# --------------------------------------------------------------------------------------------
# configuration (the CLI builds its flags from these fields; `help` is the flag's help text)
# --------------------------------------------------------------------------------------------
MAX_FPS = 240.0
MAX_FRAMES_LIMIT = 10_000
DEFAULT_MAX_MEMORY_MB = 8192


@dataclass
class SamplingConfig:
    """Which frames to take from a video: a target rate or a count, never more than ``max_frames``.

    With neither ``fps`` nor ``num_frames`` set, 2 frames per second are taken (the Qwen
    default). Frames are spread uniformly over the whole video and always include frame 0 and
    the last frame when two or more are taken.
    """

    fps: float | None = field(
        default=None, metadata={"help": f"frames per second to sample, in (0, {MAX_FPS:g}] (default 2)"}
    )
    num_frames: int | None = field(
        default=None, metadata={"help": "number of frames to sample instead of --fps", "flag": "--num-frames"}
    )
    max_frames: int = field(default=32, metadata={"help": "never sample more frames than this"})

    def __post_init__(self) -> None:
        if self.fps is not None and self.num_frames is not None:
            raise VideoError("give either fps or num_frames, not both")
        if self.fps is not None:
            if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or not (
                math.isfinite(self.fps) and 0 < self.fps <= MAX_FPS
            ):
                raise VideoError(f"fps must be in (0, {MAX_FPS:g}], got {self.fps!r}")
            self.fps = float(self.fps)
        for name in ("num_frames", "max_frames"):
            v = getattr(self, name)
            if v is None:
                continue
            check_num_frames(v, name, upper=MAX_FRAMES_LIMIT, error=VideoError)
        if self.num_frames is not None and self.num_frames > self.max_frames:
            # an explicit count is never capped silently
            raise VideoError(f"num_frames={self.num_frames} is more than max_frames={self.max_frames}; "
                             f"raise max_frames (--max-frames {self.num_frames}) to sample that many")

    @property
    def target_fps(self) -> float | None:
        """The sampling rate in frames per second, or None when sampling by count."""
        if self.num_frames is not None:
            return None
        return 2.0 if self.fps is None else self.fps


@dataclass
class VideoLimits:
    """Largest video that is accepted, checked from the header before anything is decoded."""

    max_width: int = field(default=7680, metadata={"help": "reject videos wider than this (pixels)"})
    max_height: int = field(default=4320, metadata={"help": "reject videos taller than this (pixels)"})
    max_duration_s: float = field(default=4 * 3600.0, metadata={"help": "reject videos longer than this (seconds)"})
    max_memory_mb: int = field(default=DEFAULT_MAX_MEMORY_MB, metadata={
        "help": "refuse, before decoding, a request whose sampled frames (decoded, then preprocessed) are estimated "
                "to need more memory than this (MiB)"})

    def __post_init__(self) -> None:
        for name in ("max_width", "max_height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise VideoError(f"{name} must be a positive int, got {v!r}")
        if not (isinstance(self.max_duration_s, (int, float)) and self.max_duration_s > 0):
            raise VideoError(f"max_duration_s must be positive, got {self.max_duration_s!r}")
        if isinstance(self.max_memory_mb, bool) or not isinstance(self.max_memory_mb, int) or self.max_memory_mb < 1:
            raise VideoError(f"max_memory_mb must be a positive int, got {self.max_memory_mb!r}")

    def check_memory(self, path, needed_bytes: int, what: str) -> None:
        """VideoError when ``needed_bytes`` (an estimate for ``what``) exceeds :attr:`max_memory_mb`."""
        if needed_bytes > self.max_memory_mb * 2**20:
            raise VideoError(f"{path}: {what} needs about {needed_bytes / 2**20:,.0f} MiB, more than the limit of "
                             f"{self.max_memory_mb:,} MiB (--max-memory-mb); sample fewer frames")


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass
class Clip:
    """Sampled frames of one video.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        timestamps: ``(T,)`` float64, seconds from the start of the video of each sampled frame.
        indices: ``(T,)`` int64, index of each sampled frame among all frames of the video.
        fps: the video's native (average) frame rate, frames per second.
        total_frames: number of frames in the whole video.
        path: the file it came from, or None for frames given in memory.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    indices: np.ndarray
    fps: float
    total_frames: int
    path: str | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        """Length of the whole video in seconds (``total_frames / fps``)."""
        return self.total_frames / self.fps

    @property
    def sampled_fps(self) -> float:
        """Frames per second actually sampled (``T / total_frames * fps``), as HF's metadata computes it."""
        return self.num_frames / self.total_frames * self.fps


@dataclass
class VideoInfo:
    """What the header (and, when the header has no frame count, a demux pass) says about a video."""

    path: str
    width: int
    height: int
    fps: float
    total_frames: int
    codec: str
    container: str

    @property
    def duration(self) -> float:
        return self.total_frames / self.fps


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
_SIGNATURES = (  # (offset, bytes): files that claim to be a container we know
    (4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"),
    (0, b"\x1a\x45\xdf\xa3"), (0, b"RIFF"), (0, b"OggS"), (0, b"FLV"), (0, b"\x00\x00\x01\xba"),
)


def _looks_like_container(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(16)
    return any(head[o : o + len(s)] == s for o, s in _SIGNATURES)


# Frame-threaded decoding pays a few ms of thread start-up per open; below this many pixels per
# frame (the small clips of the synthetic QA set, 112 x 112) that start-up costs more than it saves.
_THREADED_DECODE_PIXELS = 320 * 240


def _import_av():
    try:
        import av  # noqa: PLC0415  (lazy on purpose: optional dependency)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("decoding videos needs PyAV: pip install 'videoprune[video]'") from e
    return av


def _open(path):
    """Open ``path`` with PyAV and return (container, video stream), or raise VideoError."""
    av = _import_av()
    # a FIFO or a device (/dev/zero) would block or stream forever: refused before it is opened
    path = check_regular_file(path, "video file", error=VideoError)
    if os.path.getsize(path) == 0:
        raise VideoError(f"video file is empty: {path}")
    try:
        container = av.open(path)
    except (av.FFmpegError, EOFError, OSError) as e:
        if _looks_like_container(path):
            raise VideoError(f"{path}: video file is truncated or corrupt ({_reason(e)})") from e
        raise VideoError(f"{path}: not a video file (ffmpeg cannot read it: {_reason(e)})") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: not a video (the file has no video stream)")
    return container, container.streams.video[0]


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def probe(path, limits: VideoLimits | None = None) -> VideoInfo:
    """Read a video's size, frame rate and frame count without decoding pictures.

    When the container stores no frame count (Matroska/WebM), packets are counted by demuxing,
    which reads the file but decodes nothing. Raises :class:`VideoError` for a missing file, a
    file that is not a video, a truncated one that cannot be opened, zero frames, or a video
    beyond ``limits``.
    """
    limits = limits or VideoLimits()
    container, stream = _open(path)
    av = _import_av()
    path = os.fspath(path)
    try:
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if width > limits.max_width or height > limits.max_height:
            raise VideoError(
                f"{path}: resolution {width}x{height} exceeds the limit "
                f"{limits.max_width}x{limits.max_height}"
            )
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if not (fps > 0 and math.isfinite(fps)):
            raise VideoError(f"{path}: the video has no usable frame rate")
        total = int(stream.frames or 0)
        if total <= 0:
            total = 0
            try:
                for packet in container.demux(stream):
                    if packet.size:
                        total += 1
                        if total / fps > limits.max_duration_s:
                            break
            except (av.FFmpegError, OSError, EOFError) as e:
                raise VideoError(f"{path}: video file is truncated or corrupt ({_reason(e)})") from e
        if total <= 0:
            raise VideoError(f"{path}: the video has zero frames")
        if total / fps > limits.max_duration_s:
            raise VideoError(
                f"{path}: video is longer than the limit of {limits.max_duration_s:g} s "
                f"({'at least ' if not stream.frames else ''}{total / fps:.1f} s)"
            )
        if width <= 0 or height <= 0:
            raise VideoError(f"{path}: the video stream has no picture size; it is corrupt")
        return VideoInfo(path, width, height, fps, total, stream.codec_context.name, container.format.name)
    finally:
        container.close()


def sample_indices(total_frames: int, native_fps: float, sampling: SamplingConfig | None = None) -> np.ndarray:
    """Indices of the frames to keep, ``(T,)`` int64, strictly increasing, in ``[0, total_frames)``.

    Count: ``T = min(num_frames, max_frames, total_frames)``. Rate: ``T = int(duration * fps)``
    (at least 1), capped the same way. The T frames are spread uniformly,
    ``floor(linspace(0, total - 1, T) + 0.5)``, so frame 0 and (for T >= 2) the last frame are
    always included; rounding half up keeps the indices distinct.
    """
    sampling = sampling or SamplingConfig()
    if isinstance(total_frames, bool) or not isinstance(total_frames, int) or total_frames < 1:
        raise VideoError(f"the video has zero frames (total_frames={total_frames!r})")
    if not (native_fps > 0 and math.isfinite(native_fps)):
        raise VideoError(f"native fps must be positive, got {native_fps!r}")
    if sampling.num_frames is not None:
        n = sampling.num_frames
    else:
        n = max(1, int(total_frames / native_fps * sampling.target_fps))
    n = min(n, sampling.max_frames, total_frames)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    return np.floor(np.linspace(0, total_frames - 1, n) + 0.5).astype(np.int64)


def decode(
    path,
    sampling: SamplingConfig | None = None,
    limits: VideoLimits | None = None,
    progress: bool = False,
) -> Clip:
    """Decode the sampled frames of a video file (any container/codec FFmpeg reads).

    Streaming: the file is decoded once, front to back, and only the sampled frames are
    converted to RGB and kept, so memory is bounded by ``T * H * W * 3`` bytes. Decoding stops
    after the last sampled frame. ``progress`` shows a tqdm bar on stderr.

    Timestamps are the frames' presentation times in seconds relative to the stream start
    (``index / fps`` when a frame has no timestamp).

    Raises:
        VideoError: missing file, not a video, truncated or corrupt, zero frames, beyond
            ``limits``, or fewer decodable frames than the header promised.
    """
    sampling = sampling or SamplingConfig()
    limits = limits or VideoLimits()
    info = probe(path, limits)
    indices = sample_indices(info.total_frames, info.fps, sampling)
    limits.check_memory(info.path, len(indices) * info.width * info.height * 3,
                        f"decoding {len(indices)} frames of {info.width}x{info.height}")
    wanted = set(indices.tolist())
    last = int(indices[-1])
    av = _import_av()
    container, stream = _open(path)
    if info.width * info.height >= _THREADED_DECODE_PIXELS:
        stream.thread_type = "AUTO"
    # One converter for the whole clip: frame.to_ndarray(format=...) builds a new swscale context
    # for every frame, which costs more than decoding a small frame (same pixels either way).
    to_rgb = av.video.reformatter.VideoReformatter()
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else None
    frames, times = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=last + 1, desc="decoding", unit="frame", leave=False)
    i = -1
    try:
        for i, frame in enumerate(container.decode(stream)):
            if bar is not None:
                bar.update(1)
            if i in wanted:
                frames.append(to_rgb.reformat(frame, format="rgb24").to_ndarray())
                t = frame.time
                if t is None:
                    times.append(i / info.fps)
                else:
                    if start is None:
                        start = t
                    times.append(max(0.0, t - start))
            if i >= last:
                break
    except (av.FFmpegError, OSError, EOFError) as e:
        raise VideoError(f"{info.path}: video file is truncated or corrupt at frame {i + 1} ({_reason(e)})") from e
    finally:
        if bar is not None:
            bar.close()
        container.close()
    if i < 0:
        raise VideoError(f"{info.path}: the video has zero decodable frames (empty, truncated or corrupt)")
    if len(frames) < len(indices):
        raise VideoError(
            f"{info.path}: video file is truncated or corrupt: only {i + 1} of "
            f"{info.total_frames} frames could be decoded"
        )
    return Clip(
        frames=np.stack(frames),
        timestamps=np.asarray(times, dtype=np.float64),
        indices=indices,
        fps=info.fps,
        total_frames=info.total_frames,
        path=info.path,
    )


def clip_from_frames(frames, fps: float = 24.0, sampling: SamplingConfig | None = None) -> Clip:
    """Wrap frames already in memory as a :class:`Clip` (optionally subsampling them).

    ``frames``: ``(T, H, W, 3)`` uint8 array/tensor or a sequence of PIL images / ``(H, W, 3)``
    uint8 arrays. ``fps`` is their native rate (frames per second). Without ``sampling`` every
    frame is kept.
    """
    arr = _frames_array(frames)
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise VideoError(f"fps must be positive, got {fps!r}")
    total = arr.shape[0]
    idx = np.arange(total, dtype=np.int64) if sampling is None else sample_indices(total, float(fps), sampling)
    return Clip(arr[idx], idx / float(fps), idx, float(fps), total, None)


def _frames_array(frames) -> np.ndarray:
    if isinstance(frames, (str, Path)):
        raise VideoError("expected frames, got a path; use decode()")
    if hasattr(frames, "detach"):  # torch tensor
        frames = frames.detach().cpu().numpy()
    if isinstance(frames, np.ndarray):
        arr = frames
    else:
        frames = list(frames)
        if not frames:
            raise VideoError("the video has zero frames")
        arr = np.stack([np.asarray(f.convert("RGB")) if hasattr(f, "convert") else np.asarray(f) for f in frames])
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise VideoError(f"frames must be (T, H, W, 3) uint8 RGB, got shape {arr.shape} dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise VideoError("the video has zero frames")
    return arr
