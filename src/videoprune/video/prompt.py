"""Build a ready HF ``inputs`` dict (prompt ids with video placeholders + video tensors) from a video and a question.

We write the prompt text ourselves instead of calling the HF processor, because the processor
would run its torchvision-based video processor. The text follows each family's chat template
and placeholder rule (transformers 5.23): Qwen2/2.5-VL put ``grid_t * grid_h * grid_w / merge^2``
``<|video_pad|>`` tokens between ``<|vision_start|>`` and ``<|vision_end|>``; Qwen3-VL puts, inside
that pair, ``<{t:.1f} seconds>`` then ``<|vision_start|>`` + one frame's pads + ``<|vision_end|>``
for every temporal slice; LLaVA-OneVision uses ``T * 14 * 14 + 1`` ``<video>`` tokens (the
pooled 27x27 grid per frame plus one newline).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .decode import Clip, SamplingConfig, VideoLimits, clip_from_frames, decode
from .device_preprocess import resolve_device
from .preprocess import FamilySpec, VideoTensors, get_family, preprocess

__all__ = ["video_placeholder", "build_prompt", "prepare_inputs"]

VIDEO_TOKEN_TYPE = 2  # mm_token_type_ids value HF uses for video tokens (0 text, 1 image)


def video_placeholder(video: VideoTensors) -> str:
    """The text that stands for the video in the prompt, with exactly the tokens the model fills."""
    spec = video.family
    pads = spec.video_token * video.tokens_per_frame
    if spec.frame_timestamps_in_prompt:
        inner = "".join(
            f"<{t:.1f} seconds>{spec.vision_start}{pads}{spec.vision_end}" for t in video.grid_timestamps
        )
    else:
        inner = spec.video_token * video.num_video_tokens
    if spec.vision_start is not None:
        return f"{spec.vision_start}{inner}{spec.vision_end}"
    return inner


def build_prompt(video: VideoTensors, question: str, system: str | None = None) -> str:
    """One user turn (video then question) in the family's chat format, ending with the assistant cue."""
    spec = video.family
    system = spec.default_system if system is None else system
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    if spec.layout == "stack":  # LLaVA-OneVision (Qwen2 LLM) chat template
        return f"{head}<|im_start|>user {video_placeholder(video)}\n{question}<|im_end|>\n<|im_start|>assistant\n"
    return f"{head}<|im_start|>user\n{video_placeholder(video)}{question}<|im_end|>\n<|im_start|>assistant\n"


def prepare_inputs(
    video,
    question: str,
    tokenizer_or_processor,
    family: str | FamilySpec | None = None,
    sampling: SamplingConfig | None = None,
    limits: VideoLimits | None = None,
    fps: float = 24.0,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    system: str | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Video + question -> the ``inputs`` dict to pass to the HF model (``model(**inputs)`` / ``generate``).

    Args:
        video: a path, a :class:`Clip`, or frames in memory (``(T, H, W, 3)`` uint8 or a list of
            PIL images, at ``fps`` frames per second).
        question: the user's text, placed after the video.
        tokenizer_or_processor: an HF tokenizer, or a processor with a ``.tokenizer``; it must
            know the family's special tokens (``<|video_pad|>``, ``<|vision_start|>``, ... or
            ``<video>``) as single tokens.
        family: name or HF ``model_type`` (see :data:`~videoprune.video.FAMILIES`); None: the
            default family (``videoprune.models.DEFAULT_FAMILY``, Qwen2-VL).
        sampling, limits: how frames are taken from a file (ignored for a Clip).
        min_pixels, max_pixels: override the family's pixel budget.
        device: None: PIL preprocessing on the CPU, every tensor on the CPU. A torch device
            (e.g. the model's, "cuda"): the frames are resized, normalised and patchified there
            (see :func:`~videoprune.video.preprocess`) and every returned tensor is on it.

    Returns:
        ``input_ids`` and ``attention_mask`` ``(1, L)`` int64, ``pixel_values_videos``, and per
        family ``video_grid_thw`` ``(1, 3)``, ``second_per_grid_ts`` ``(1,)`` (Qwen2.5-VL),
        ``mm_token_type_ids`` ``(1, L)`` (Qwen families, 2 on video tokens). The number of
        video tokens in ``input_ids`` equals the number of features the model's
        ``get_video_features`` returns for ``pixel_values_videos``.
    """
    spec = get_family(family)
    dev = None if device is None else resolve_device(device)  # a bad device fails before decoding
    if isinstance(video, Clip):
        clip = video
    elif isinstance(video, (str, os.PathLike, Path)):
        clip = decode(video, sampling, limits, progress=progress)
    else:
        clip = clip_from_frames(video, fps=fps, sampling=sampling)
    vt = preprocess(clip, spec, min_pixels=min_pixels, max_pixels=max_pixels, device=dev)
    tokenizer = getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor)
    video_id = tokenizer.convert_tokens_to_ids(spec.video_token)
    if video_id is None or video_id == getattr(tokenizer, "unk_token_id", object()):
        raise ValueError(f"the tokenizer has no {spec.video_token!r} token; is it a {spec.name} tokenizer?")
    enc = tokenizer(build_prompt(vt, question, system), add_special_tokens=False, return_tensors="pt")
    input_ids = enc["input_ids"]
    n_placeholders = int((input_ids == video_id).sum())
    if n_placeholders != vt.num_video_tokens:
        raise ValueError(
            f"the tokenizer produced {n_placeholders} {spec.video_token!r} tokens, expected "
            f"{vt.num_video_tokens}; it must treat {spec.video_token!r} as one special token"
        )
    out = {"input_ids": input_ids, "attention_mask": enc.get("attention_mask", torch.ones_like(input_ids))}
    if spec.layout == "patches":
        out["mm_token_type_ids"] = (input_ids == video_id).long() * VIDEO_TOKEN_TYPE
    if dev is not None:
        out = {k: v.to(dev) for k, v in out.items()}
    out.update(vt.model_inputs())
    return out
