"""Video in, model inputs out: decoding (PyAV, imported lazily), sampling, per-family preprocessing (PIL, or torch on a device), prompts."""

from .data import SAMPLE_CLIPS, sample_clip
from .decode import Clip, SamplingConfig, VideoError, VideoInfo, VideoLimits, clip_from_frames, decode, probe, sample_indices
from .preprocess import (
    FAMILIES,
    FamilySpec,
    Molmo2Video,
    VideoTensors,
    get_family,
    preprocess,
    preprocess_molmo2,
    smart_resize,
    smart_resize_qwen3,
)
from .prompt import build_prompt, prepare_inputs, video_placeholder

__all__ = [
    "SAMPLE_CLIPS",
    "sample_clip",
    "Clip",
    "SamplingConfig",
    "VideoError",
    "VideoInfo",
    "VideoLimits",
    "clip_from_frames",
    "decode",
    "probe",
    "sample_indices",
    "FAMILIES",
    "FamilySpec",
    "VideoTensors",
    "get_family",
    "preprocess",
    "Molmo2Video",
    "preprocess_molmo2",
    "smart_resize",
    "smart_resize_qwen3",
    "build_prompt",
    "prepare_inputs",
    "video_placeholder",
]
