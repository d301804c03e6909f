"""Small builders for the training tests: a TrainConfig for the tiny model on the toy clips."""

from __future__ import annotations

from videoprune.train import TrainConfig

FRAMES = 8  # -> 4 temporal slices
PIXELS = 112 * 112  # -> 8x8 patches of 14 px -> 4x4 merged tokens per slice


def tiny_config(data, out, **overrides) -> TrainConfig:
    kw = dict(data=str(data), model="tiny:qwen2_5_vl", output_dir=str(out), max_steps=4, lr=1e-2, num_frames=FRAMES,
              min_pixels=PIXELS, max_pixels=PIXELS, rate_dist="fixed:0.5", schedule="constant", seed=0)
    kw.update(overrides)
    return TrainConfig(**kw)


class Interrupt(Exception):
    """Raised from on_step to stop a run as a crash would."""


def run_interrupted_and_resumed(data, tmp_path, stop_step: int, **kw):
    """Train uninterrupted in tmp_path/a; train in tmp_path/b, stop after ``stop_step``, resume there.

    Returns ``(full, resumed)`` TrainResults, for comparing the steps after the resume point.
    """
    import pytest

    from videoprune.train import train

    full = train(tiny_config(data, tmp_path / "a", **kw))

    def stop(info):
        if info.step == stop_step:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny_config(data, tmp_path / "b", **kw), on_step=stop)
    resumed = train(tiny_config(data, tmp_path / "b", resume="auto", **kw))
    return full, resumed


def toy_batch(data, indices) -> dict:
    """The collated micro-batch the trainer feeds for ``indices`` (tiny Qwen2.5-VL, word tokenizer)."""
    from videoprune.train.data import VideoQADataset, collate, read_jsonl
    from videoprune.train.tokenizer import build_word_tokenizer
    from videoprune.video import SamplingConfig

    records, _ = read_jsonl(str(data))
    tok = build_word_tokenizer()
    ds = VideoQADataset(records, tok, "qwen2_5_vl", sampling=SamplingConfig(num_frames=FRAMES), min_pixels=PIXELS,
                        max_pixels=PIXELS)
    batch = collate([ds[i] for i in indices], tok.pad_token_id)
    batch.pop("index")
    return batch
