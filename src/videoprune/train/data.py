"""Video-QA JSONL -> per-rank micro-batches of model inputs with labels on answer tokens only.

Lines are ``{"video": path relative to the JSONL, "question": str, "answer": str,
"timestamps": [seconds, ...] (optional)}``. Every video is checked from its header when the
file is read (:func:`videoprune.video.probe`): a missing or unreadable one is reported with its
line number and either stops the run or is dropped (``on_bad_video``), before any training, so
all ranks see the same list. A video that passes the header check but fails to decode later
stops the run with a :class:`DataError` naming ``FILE:LINE`` (skipping it mid-epoch would
desynchronise the ranks). With ``confine=True`` a video path that resolves outside the JSONL's
folder (``..``, absolute, a symlink pointing out) is refused.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Record", "BadVideo", "DataError", "read_jsonl", "VideoQADataset", "collate", "ShardedSchedule", "MicroBatches"]

IGNORE = -100


class DataError(ValueError):
    """A training sample that fails while the run is training (``FILE:LINE: ...``); the trainer checkpoints first."""


@dataclass(frozen=True)
class Record:
    """One usable JSONL line; ``line`` is 1-based, ``source`` the JSONL file it came from."""

    line: int
    video: Path
    question: str
    answer: str
    timestamps: tuple[float, ...] | None = None
    source: Path | None = None

    @property
    def where(self) -> str:
        """``FILE:LINE`` (or ``line LINE`` for a record built without its file)."""
        return f"{self.source}:{self.line}" if self.source is not None else f"line {self.line}"


@dataclass(frozen=True)
class BadVideo:
    line: int
    video: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: video {self.video!r}: {self.reason}"


def read_jsonl(path, on_bad_video: str = "error", limits=None, progress: bool = False,
               confine: bool = False) -> tuple[list[Record], list[BadVideo]]:
    """Parse and check ``path``; returns (usable records, skipped bad videos).

    ``confine``: every video must resolve (symlinks followed) inside ``path``'s folder.

    Raises:
        ValueError: a malformed line (always, with its number: non-finite or negative
            timestamps included); a video outside the folder with ``confine`` (always); a bad
            video when ``on_bad_video == "error"``; no usable line at all.
    """
    from ..video import VideoError, probe

    if on_bad_video not in ("skip", "error"):
        raise ValueError(f"on_bad_video must be 'skip' or 'error', got {on_bad_video!r}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    lines = path.read_text().splitlines()
    root = path.parent.resolve()
    it = enumerate(lines, start=1)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(lines), desc="checking videos", unit="line", file=sys.stderr)
    records, bad = [], []
    for no, text in it:
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{no}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{no}: expected a JSON object")
        for key in ("video", "question", "answer"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise ValueError(f"{path}:{no}: field {key!r} must be a non-empty string")
        ts = row.get("timestamps")
        if ts is not None and not (isinstance(ts, list) and all(
                isinstance(t, (int, float)) and not isinstance(t, bool) for t in ts)):
            raise ValueError(f"{path}:{no}: 'timestamps' must be a list of numbers (seconds)")
        if ts is not None and not all(math.isfinite(t) and t >= 0 for t in ts):
            raise ValueError(f"{path}:{no}: 'timestamps' must be finite seconds >= 0, got {ts!r}")
        video = (path.parent / row["video"]).resolve()
        if confine and not video.is_relative_to(root):
            raise ValueError(f"{path}:{no}: video {row['video']!r} resolves to {str(video)!r}, outside the data "
                             f"folder {str(root)!r} (confine_videos is on)")
        try:
            probe(video, limits)
        except VideoError as e:
            item = BadVideo(no, row["video"], str(e))
            if on_bad_video == "error":
                raise ValueError(f"{path}:{no}: bad video {row['video']!r}: {e} (use --on-bad-video skip to drop "
                                 "such lines)") from None
            bad.append(item)
            continue
        records.append(Record(no, video, row["question"], row["answer"], tuple(ts) if ts is not None else None,
                              path))
    if not records:
        raise ValueError(f"{path}: no usable lines ({len(bad)} bad videos skipped)")
    return records, bad


class VideoQADataset(torch.utils.data.Dataset):
    """Item ``i``: the model inputs for ``records[i]`` with ``labels`` on the answer tokens.

    Keys: ``input_ids``, ``attention_mask``, ``labels`` ``(L,)`` (-100 except on the answer and
    the end-of-turn token after it), the family's video tensors (as
    :func:`videoprune.video.prepare_inputs` returns them), ``index`` (into ``records``).
    """

    def __init__(self, records: list[Record], tokenizer, family: str, sampling=None, limits=None,
                 min_pixels: int | None = None, max_pixels: int | None = None):
        self.records, self.tokenizer, self.family = records, tokenizer, family
        self.sampling, self.limits = sampling, limits
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.end_id = eot if isinstance(eot, int) and eot != tokenizer.unk_token_id else tokenizer.eos_token_id
        if self.end_id is None:
            raise ValueError("the tokenizer has neither <|im_end|> nor an eos token to end the answer with")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        from ..video import VideoError, prepare_inputs

        rec = self.records[i]
        try:
            inputs = prepare_inputs(str(rec.video), rec.question, self.tokenizer, family=self.family,
                                    sampling=self.sampling, limits=self.limits, min_pixels=self.min_pixels,
                                    max_pixels=self.max_pixels)
        except VideoError as e:
            raise DataError(f"{rec.where}: video {str(rec.video)!r} failed to decode: {e}") from None
        answer = self.tokenizer(rec.answer, add_special_tokens=False)["input_ids"] + [self.end_id]
        prompt = inputs.pop("input_ids")[0]
        answer = torch.tensor(answer, dtype=prompt.dtype)
        out = {k: v for k, v in inputs.items() if k not in ("attention_mask", "mm_token_type_ids")}
        out["input_ids"] = torch.cat([prompt, answer])
        out["attention_mask"] = torch.ones_like(out["input_ids"])
        out["labels"] = torch.cat([torch.full_like(prompt, IGNORE), answer])
        if "mm_token_type_ids" in inputs:
            out["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"][0], torch.zeros_like(answer)])
        out["index"] = i
        return out


_PER_TOKEN = {"input_ids", "attention_mask", "labels", "mm_token_type_ids"}


def collate(samples: list[dict], pad_id: int) -> dict:
    """Left-pad the per-token tensors to ``(B, L)`` (pad id / 0 / -100); concatenate video tensors on dim 0."""
    length = max(s["input_ids"].shape[0] for s in samples)
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE, "mm_token_type_ids": 0}
    out = {}
    for key in samples[0]:
        if key == "index":
            out[key] = torch.tensor([s[key] for s in samples])
        elif key in _PER_TOKEN:
            rows = torch.full((len(samples), length), fill[key], dtype=samples[0][key].dtype)
            for i, s in enumerate(samples):
                rows[i, length - s[key].shape[0]:] = s[key]
            out[key] = rows
        else:
            out[key] = torch.cat([s[key] for s in samples], dim=0)
    return out


@dataclass(frozen=True)
class ShardedSchedule:
    """Which samples each rank reads in each micro-batch; a pure function of (seed, epoch, rank).

    Epoch ``e`` shuffles all ``n`` samples with ``seed + e``; rank ``r`` of ``w`` takes every
    ``w``-th of them starting at ``r`` (a disjoint shard), truncated so that every rank has the
    same ``n // w`` samples, grouped into ``n // w // batch_size`` micro-batches (last partial
    one dropped). Micro-batch ``m`` (global counter over epochs) is therefore known without
    state, which is what makes resume exact.
    """

    num_samples: int
    batch_size: int
    rank: int = 0
    world_size: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.num_samples // self.world_size < self.batch_size:
            raise ValueError(f"{self.num_samples} samples cannot fill one micro-batch of {self.batch_size} on each "
                             f"of {self.world_size} ranks")

    @property
    def micro_per_epoch(self) -> int:
        return self.num_samples // self.world_size // self.batch_size

    def micro_batch(self, m: int) -> list[int]:
        epoch, pos = divmod(m, self.micro_per_epoch)
        order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + epoch))
        shard = order[self.rank::self.world_size][: self.num_samples // self.world_size]
        return shard[pos * self.batch_size:(pos + 1) * self.batch_size].tolist()


class MicroBatches(torch.utils.data.Dataset):
    """Micro-batches ``start .. stop-1`` of a schedule, collated (for a DataLoader with batch_size=None)."""

    def __init__(self, dataset: VideoQADataset, schedule: ShardedSchedule, start: int, stop: int, pad_id: int):
        self.dataset, self.schedule, self.start, self.stop, self.pad_id = dataset, schedule, start, stop, pad_id

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> dict:
        return collate([self.dataset[j] for j in self.schedule.micro_batch(self.start + i)], self.pad_id)
