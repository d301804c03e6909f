"""ModelBundle: a video VLM, its tokenizer and the preprocessing it expects, loaded in one call.

``load_bundle("default")`` is the small Qwen2.5-VL-architecture model embedded in the package
(trained on the synthetic temporal video-QA); any other argument is a local checkpoint path or
a hub id, resolved by :func:`videoprune.hub.resolve` (fails at once when it cannot load) and
passed to ``from_pretrained``. A checkpoint folder may hold ``videoprune.json`` with
the preprocessing it was trained with (family, frames, fps, pixel budget, system prompt);
without it, the family's defaults apply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .hub import ASSETS, EMBEDDED, resolve
from .validate import check_num_frames, check_pixel_budget, check_regular_file

__all__ = ["ASSETS", "EMBEDDED", "SPEC_FILE", "ModelBundle", "context_length", "estimate_video_tokens", "load_bundle",
           "sample_question", "sample_video"]

SPEC_FILE = "videoprune.json"
SAMPLE_VIDEO = ASSETS / "sample.mp4"
SAMPLE_JSON = ASSETS / "sample.json"  # the sample clip's question, answer and scene description


def sample_video() -> str:
    """Path of the bundled sample clip (a held-out synthetic clip the default model was not trained on)."""
    if not SAMPLE_VIDEO.exists():
        raise FileNotFoundError(f"the bundled sample clip is missing: {SAMPLE_VIDEO}")
    return str(SAMPLE_VIDEO)


def sample_question() -> str:
    """The question that goes with :func:`sample_video`."""
    return json.loads(SAMPLE_JSON.read_text())["question"]


@dataclass
class ModelBundle:
    """A model ready for video QA, with the preprocessing that matches it."""

    model: Any
    tokenizer: Any
    family: str
    path: str
    num_frames: int | None = 16
    fps: float = 8.0
    frame_size: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    system: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.num_frames is not None:
            check_num_frames(self.num_frames)
        check_pixel_budget(self.min_pixels, self.max_pixels)

    def sampling(self, num_frames: int | None = None):
        """The :class:`~videoprune.video.SamplingConfig` for ``num_frames`` (None: this model's default).

        An explicit count is taken as asked (``max_frames`` raised to it), never capped silently;
        0 or a negative count is a ValueError, not "the default".
        """
        from .video import SamplingConfig

        n = self.num_frames if num_frames is None else check_num_frames(num_frames)
        return SamplingConfig(num_frames=n, max_frames=max(n, 32)) if n else SamplingConfig(fps=self.fps)

    def inputs(self, video, question: str, num_frames: int | None = None) -> dict[str, torch.Tensor]:
        """``prepare_inputs`` for one (video, question) with this model's preprocessing."""
        from .video import prepare_inputs

        return prepare_inputs(video, question, self.tokenizer, family=self.family, sampling=self.sampling(num_frames),
                              fps=self.fps, min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                              system=self.system)

    @property
    def context_length(self) -> int | None:
        """The language model's context: ``max_position_embeddings`` of the text config (None if unset)."""
        return context_length(self.model.config)

    def video_tokens(self, width: int, height: int, frames: int) -> int:
        """LLM tokens (placeholders, plus Qwen3-VL's per-slice timestamp text, roughly) of ``frames`` frames of ``width x height``."""
        return estimate_video_tokens(self.family, width, height, frames, self.min_pixels, self.max_pixels)

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Left-pad several ``inputs`` dicts into one batch (video tensors concatenated in order)."""
        pad = self.tokenizer.pad_token_id or 0
        length = max(it["input_ids"].shape[1] for it in items)
        out: dict[str, torch.Tensor] = {}
        for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
            if key not in items[0]:
                continue
            fill = pad if key == "input_ids" else 0
            rows = []
            for it in items:
                x = it[key][0]
                rows.append(torch.cat([x.new_full((length - x.shape[0],), fill), x]))
            out[key] = torch.stack(rows)
        for key in items[0]:
            if key not in out:
                out[key] = torch.cat([it[key] for it in items])
        return out

    def decode_token(self, token_id: int) -> str:
        return self.tokenizer.decode([int(token_id)]).strip()

    def stts_config(self, ratio: float, scorer: str = "default"):
        """The :class:`~videoprune.stts.STTSConfig` for ``scorer`` at drop ratio ``ratio``.

        The scorer's other settings (``prune_at``, widths, ...) must be the ones it was trained
        with; ``videoprune train --method stts`` writes them to ``stts_config.json`` beside the
        weights, and they are read from there when present (else STTSConfig's defaults).
        """
        from .stts import STTSConfig
        from .stts.weights import SETTINGS_FILE

        path = self.resolve_scorer(scorer)
        saved = Path(path).with_name(SETTINGS_FILE)
        try:
            fields = json.loads(saved.read_text()).get("stts", {}) if saved.exists() else {}
        except (ValueError, AttributeError) as e:
            raise ValueError(f"scorer settings file is corrupt: {saved} ({e})") from e
        fields = {k: v for k, v in fields.items() if k not in ("ratio", "scorer_path")}
        return STTSConfig(**fields, ratio=ratio, scorer_path=path)

    def resolve_scorer(self, name: str) -> str:
        """'default' -> the STTS scorer shipped beside this model; anything else is a path to a scorer file.

        Raises ValueError ``scorer file not found: <path>`` / ``not a regular file: <path> (...)``
        before anything else reads the settings beside it.
        """
        if name == "default":
            from .stts.weights import SCORER_FILE

            p = Path(self.path) / SCORER_FILE
            if not p.exists():
                raise FileNotFoundError(f"no STTS scorer ships with {self.path}; pass a scorer path")
            return str(p)
        return check_regular_file(name, "scorer file")


def context_length(config) -> int | None:
    """``max_position_embeddings`` of a model config's text config (None when it has none)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text, "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def estimate_video_tokens(family: str, width: int, height: int, frames: int,
                          min_pixels: int | None = None, max_pixels: int | None = None) -> int:
    """LLM tokens one video of ``frames`` frames of ``width x height`` px takes in ``family``'s prompt.

    The placeholders exactly (the preprocessing's own resize rule), plus for Qwen3-VL about 8
    text tokens of ``<t seconds>`` per temporal slice. Computed from sizes alone: nothing is
    decoded, so a request can be refused before any work.
    """
    import math

    from .video.preprocess import target_size, get_family

    spec = get_family(family).with_pixels(min_pixels, max_pixels)
    if spec.layout != "patches":  # LLaVA-OneVision: pooled grid per frame plus one newline token
        return frames * spec.llava_pooled_side**2 + 1
    h, w = target_size(spec, frames, height, width)
    slices = math.ceil(frames / spec.temporal_patch_size)
    unit = spec.patch_size * spec.merge_size
    per_slice = (h // unit) * (w // unit)
    return slices * (per_slice + (8 if spec.frame_timestamps_in_prompt else 0))


def load_bundle(name_or_path: str = "default", dtype: torch.dtype | None = None, device: str | None = None) -> ModelBundle:
    """Load a model + tokenizer + preprocessing spec.

    Args:
        name_or_path: ``"default"`` / ``"default-uptrained"`` (embedded), a local checkpoint
            folder, or a hub id (needs the hub the first time; see :func:`videoprune.hub.resolve`).
        dtype, device: passed to ``from_pretrained`` / ``.to``.
    """
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    path = resolve(name_or_path)
    local = Path(path)
    spec = json.loads((local / SPEC_FILE).read_text()) if (local / SPEC_FILE).exists() else {}
    kwargs = {"dtype": dtype} if dtype is not None else {}
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a CLI's stderr carries our messages, not a loading bar
    try:
        model = AutoModelForImageTextToText.from_pretrained(str(path), **kwargs).eval()
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if device is not None:
        model = model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    family = spec.pop("family", model.config.model_type)
    known = {k: spec.pop(k) for k in ("num_frames", "fps", "frame_size", "min_pixels", "max_pixels", "system") if k in spec}
    try:
        return ModelBundle(model=model, tokenizer=tokenizer, family=family, path=str(path), extra=spec, **known)
    except ValueError as e:
        raise ValueError(f"{local / SPEC_FILE}: {e}") from e
