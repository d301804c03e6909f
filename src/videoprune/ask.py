"""`videoprune ask VIDEO "question"`: answer with a (pruned) video VLM and show what pruning saved.

With no ``--model`` the embedded default model answers (a small Qwen2.5-VL-architecture model
trained on the synthetic temporal video-QA; it knows only that task's words). Any supported
hub id or local checkpoint works too. Time-to-first-token is measured with and without pruning
in the same process, each after a discarded warm-up run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

__all__ = ["AskConfig", "AskResult", "ask", "format_answer", "ASK_METHODS"]

ASK_METHODS = ("evs", "evs-pixel", "evs-pre", "random", "stts", "none")


@dataclass
class AskConfig:
    """Settings of ``videoprune ask`` (CLI flags are built from these fields)."""

    model: str = field(default="default", metadata={"help": "checkpoint path or hub id ('default' = the embedded model)"})
    method: str = field(default="evs", metadata={"help": "pruning method", "choices": ASK_METHODS})
    rate: float | None = field(default=None, metadata={"help": "pruning rate in [0, 1) (default 0.75; exclusive with --threshold)"})
    threshold: float | None = field(default=None, metadata={"help": "EVS threshold mode instead of a rate"})
    num_frames: int | None = field(default=None, metadata={"help": "frames to sample (default: the model's)"})
    max_new_tokens: int = field(default=8, metadata={"help": "longest answer generated"})
    scorer: str = field(default="default", metadata={"help": "method stts: scorer weights ('default' = shipped with the model)"})
    timing_runs: int = field(default=3, metadata={"help": "timed TTFT runs per setting (median), after one warm-up"})

    def __post_init__(self):
        if self.method not in ASK_METHODS:
            raise ValueError(f"method must be one of {ASK_METHODS}, got {self.method!r}")
        if self.rate is not None and self.threshold is not None:
            raise ValueError("give --rate or --threshold, not both")
        if self.threshold is not None and self.method not in ("evs", "evs-pixel", "evs-pre"):
            raise ValueError(f"--threshold applies to the EVS methods, not {self.method!r}")
        if self.rate is not None and not 0.0 <= self.rate < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {self.rate}")
        if self.max_new_tokens < 1 or self.timing_runs < 1:
            raise ValueError("max_new_tokens and timing_runs must be >= 1")


@dataclass
class AskResult:
    answer: str
    answer_unpruned: str
    tokens_before: int
    tokens_after: int
    kept_per_frame: list[int]
    ttft_unpruned_s: float
    ttft_pruned_s: float
    method: str
    model: str

    @property
    def speedup(self) -> float:
        return self.ttft_unpruned_s / self.ttft_pruned_s

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["ttft_speedup"] = self.speedup
        return d


def _prune_config(cfg: AskConfig, bundle):
    from . import EVSConfig

    rate = 0.75 if cfg.rate is None and cfg.threshold is None else cfg.rate
    if cfg.method == "none":
        return None
    if cfg.method == "stts":
        return bundle.stts_config(rate, cfg.scorer)
    kw = {"rate": rate} if cfg.threshold is None else {"threshold": cfg.threshold}
    if cfg.method == "evs-pixel":
        kw["criterion"] = "pixel"
    elif cfg.method == "evs-pre":
        kw.update(criterion="pixel", stage="pre_encoder")
    elif cfg.method == "random":
        kw["criterion"] = "random"
    return EVSConfig(**kw)


def _generate(model, inputs, max_new_tokens: int, eos: int | None) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos)


def _ttft(model, inputs, runs: int) -> float:
    """Median seconds of prefill + first token (one greedy token through generate), after a warm-up."""
    _generate(model, inputs, 1, None)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        _generate(model, inputs, 1, None)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def ask(video, question: str, cfg: AskConfig | None = None) -> AskResult:
    """Answer ``question`` about ``video`` (path or frames) with and without pruning."""
    import videoprune

    from .bundle import load_bundle

    cfg = cfg or AskConfig()
    if isinstance(video, (str, bytes)) or hasattr(video, "__fspath__"):
        from .video import probe

        probe(video)  # fail on a missing or broken file before loading a model
    bundle = load_bundle(cfg.model)
    model, tok = bundle.model, bundle.tokenizer
    inputs = bundle.inputs(video, question, num_frames=cfg.num_frames)
    prompt_len = inputs["input_ids"].shape[1]
    eos = tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tok.get_vocab() else tok.eos_token_id

    def decode(out):
        return tok.decode(out[0, prompt_len:], skip_special_tokens=True).strip()

    answer_unpruned = decode(_generate(model, inputs, cfg.max_new_tokens, eos))
    ttft_unpruned = _ttft(model, inputs, cfg.timing_runs)
    n_video = int((inputs["input_ids"] == model.config.video_token_id).sum())
    prune_cfg = _prune_config(cfg, bundle)
    if prune_cfg is None:
        return AskResult(answer_unpruned, answer_unpruned, n_video, n_video, [], ttft_unpruned, ttft_unpruned,
                         cfg.method, bundle.path)
    handle = videoprune.patch(model, prune_cfg)
    try:
        answer = decode(_generate(model, inputs, cfg.max_new_tokens, eos))
        stats = handle.stats
        ttft_pruned = _ttft(model, inputs, cfg.timing_runs)
    finally:
        handle.remove()
    video_stats = stats.videos[0]
    return AskResult(answer, answer_unpruned, video_stats.tokens_before, video_stats.tokens_after,
                     list(video_stats.kept_per_frame), ttft_unpruned, ttft_pruned, cfg.method, bundle.path)


def format_answer(r: AskResult) -> str:
    """A short human-readable report."""
    lines = [f"answer        {r.answer}"]
    if r.answer != r.answer_unpruned:
        lines.append(f"unpruned      {r.answer_unpruned}   (the unpruned model answers differently)")
    if r.kept_per_frame:
        kept = r.tokens_after / r.tokens_before
        lines += [
            f"video tokens  {r.tokens_before} -> {r.tokens_after} ({kept:.0%} kept, method {r.method})",
            f"kept/slice    {', '.join(map(str, r.kept_per_frame))}",
            f"TTFT          {r.ttft_unpruned_s * 1e3:.1f} ms unpruned -> {r.ttft_pruned_s * 1e3:.1f} ms pruned "
            f"({r.speedup:.2f}x, median of timed runs after a warm-up)",
        ]
    else:
        lines.append(f"video tokens  {r.tokens_before} (no pruning); TTFT {r.ttft_unpruned_s * 1e3:.1f} ms")
    lines.append(f"model         {r.model}")
    return "\n".join(lines)
