"""Builders for tiny test clips written with PyAV, and shared constants (imported by the video tests)."""

from __future__ import annotations

import numpy as np
import pytest

av = pytest.importorskip("av")

WIDTH, HEIGHT = 64, 48
NUM_FRAMES = 12
RATE = 10  # frames per second of generated clips

# (file name, codec, pixel format): one per container the issue names
CONTAINERS = [
    ("clip.mp4", "libx264", "yuv420p"),
    ("clip.mkv", "mpeg4", "yuv420p"),
    ("clip.webm", "libvpx", "yuv420p"),
    ("clip.avi", "mjpeg", "yuvj420p"),
    ("clip.mov", "mpeg4", "yuv420p"),
]


def moving_bar_frames(n=NUM_FRAMES, width=WIDTH, height=HEIGHT) -> np.ndarray:
    """(n, H, W, 3) uint8: a static grey background with one bright bar moving right 4 px per frame."""
    frames = np.full((n, height, width, 3), 60, dtype=np.uint8)
    for i in range(n):
        x = (4 * i) % (width - 8)
        frames[i, :, x : x + 8] = 230
    return frames


def write_clip(path, frames=None, codec="libx264", pix_fmt="yuv420p", rate=RATE) -> str:
    """Encode ``frames`` ((T, H, W, 3) uint8) into ``path``; the container follows the extension."""
    frames = moving_bar_frames() if frames is None else frames
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = pix_fmt
    for f in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return str(path)
