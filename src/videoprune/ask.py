"""`videoprune ask VIDEO "question"`: answer with a (pruned) video VLM and show what pruning saved.

With no ``--model`` the embedded default model answers (a small Qwen2.5-VL-architecture model
trained on the synthetic temporal video-QA; it knows only that task's words). Any supported
hub id or local checkpoint works too (see :func:`videoprune.hub.resolve`); a checkpoint exported
by ``videoprune train`` is pruned at the rate recorded in its config unless ``rate`` is given.
Time-to-first-token is measured with and without pruning in the same process, the runs
interleaved so that load from other processes hits both alike, and reported with their spread
and the torch thread count: at the few hundred video tokens of the embedded model it measures
per-call overhead, not pruning (``videoprune bench speed`` measures that).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

from .methods import DEFAULT_RATE, get_method, method_choices
from .validate import check_num_frames
from .video.decode import MAX_FRAMES_LIMIT

__all__ = ["AskConfig", "AskResult", "ask", "check_request_fits", "format_answer", "ASK_METHODS"]

#: the methods ``ask`` offers (the methods table's, see :mod:`videoprune.methods`)
ASK_METHODS = method_choices("ask")
#: below this many video tokens a TTFT difference is per-call overhead, not pruning
OVERHEAD_TOKENS = 1024


@dataclass
class AskConfig:
    """Settings of ``videoprune ask`` (CLI flags are built from these fields)."""

    model: str = field(default="default", metadata={"help": "checkpoint path or hub id ('default' = the embedded model)"})
    method: str = field(default="evs", metadata={"help": "pruning method", "choices": ASK_METHODS})
    rate: float | None = field(default=None, metadata={"help": (
        "pruning rate in [0, 1), exclusive with --threshold (default: the video_pruning_rate a `videoprune train` "
        f"export records in its config when above 0, else {DEFAULT_RATE})")})
    threshold: float | None = field(default=None, metadata={"help": "EVS threshold mode instead of a rate"})
    num_frames: int | None = field(default=None, metadata={"help": f"frames to sample, in [1, {MAX_FRAMES_LIMIT}] "
                                                                   "(default: the model's); refused when the video's "
                                                                   "tokens do not fit the model's context"})
    max_new_tokens: int = field(default=8, metadata={"help": "longest answer generated"})
    scorer: str = field(default="default", metadata={"help": "method stts: scorer weights ('default' = shipped with the model)"})
    timing_runs: int = field(default=5, metadata={"help": "timed TTFT runs per setting, unpruned and pruned "
                                                          "interleaved, after one discarded run of each"})

    def __post_init__(self):
        # no default rate here: without one, ask takes the rate an export records (see _rate)
        self.rate, self.threshold = get_method(self.method, "ask").check_budget(self.rate, self.threshold, default=None)
        if self.num_frames is not None:
            check_num_frames(self.num_frames, upper=MAX_FRAMES_LIMIT)
        if self.max_new_tokens < 1 or self.timing_runs < 1:
            raise ValueError("max_new_tokens and timing_runs must be >= 1")


@dataclass
class AskResult:
    """What :func:`ask` found. Times in seconds; ``ttft_*_s`` is the median of ``ttft_*_runs_s``.

    ``rate_source``: where ``rate`` came from: ``"given"``, ``"model config"`` (the export's
    ``video_pruning_rate``) or ``"default"``; ``threads``: torch's CPU thread count while timing.
    """

    answer: str
    answer_unpruned: str
    tokens_before: int
    tokens_after: int
    kept_per_frame: list[int]
    ttft_unpruned_s: float
    ttft_pruned_s: float
    method: str
    model: str
    rate: float | None = None
    rate_source: str = "default"
    ttft_unpruned_runs_s: list[float] = field(default_factory=list)
    ttft_pruned_runs_s: list[float] = field(default_factory=list)
    threads: int = 0

    @property
    def speedup(self) -> float:
        return self.ttft_unpruned_s / self.ttft_pruned_s

    @property
    def ttft_separable(self) -> bool:
        """True when every pruned run beat every unpruned one, or the reverse (the ranges do not overlap)."""
        u, p = self.ttft_unpruned_runs_s, self.ttft_pruned_runs_s
        return bool(u and p) and (max(p) < min(u) or max(u) < min(p))

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["ttft_speedup"] = self.speedup
        return d


def _rate(cfg: AskConfig, model) -> tuple[float | None, str]:
    """(rate, where it came from); rate None in threshold mode."""
    if cfg.threshold is not None:
        return None, "given"
    if cfg.rate is not None:
        return cfg.rate, "given"
    exported = getattr(model.config, "video_pruning_rate", None)
    if isinstance(exported, (int, float)) and 0.0 < exported < 1.0:  # 0 = trained unpruned: nothing to show
        return float(exported), "model config"
    return DEFAULT_RATE, "default"


def _prune_config(cfg: AskConfig, bundle, rate: float | None):
    """The patch config of ``cfg.method`` at ``rate`` (None in threshold mode), from the methods table; None: no patch."""
    return get_method(cfg.method, "ask").bundle_config(bundle, rate, threshold=cfg.threshold, scorer=cfg.scorer)


def _check_context(bundle, tokens: int, max_new_tokens: int, what: str, hint: str = "") -> None:
    ctx = bundle.context_length
    if ctx is not None and tokens + max_new_tokens > ctx:
        raise ValueError(f"the request does not fit the model's context: {what} + {max_new_tokens} new tokens = "
                         f"{tokens + max_new_tokens} > {ctx} (max_position_embeddings of {bundle.path}); "
                         f"pruning does not help, the model sees unpruned positions{hint}")


def check_request_fits(bundle, info, num_frames: int | None, max_new_tokens: int) -> int:
    """Refuse (ValueError) a video whose tokens alone exceed the model's context; returns the frames sampled.

    From the video's header (``info``, :func:`videoprune.video.probe`) and the bundle's
    preprocessing only: nothing is decoded or run. The exact prompt length is checked again
    after tokenization, before the model runs.
    """
    from .video.decode import sample_indices

    sampling = bundle.sampling(num_frames)
    frames = len(sample_indices(info.total_frames, info.fps, sampling))
    tokens = bundle.video_tokens(info.width, info.height, frames)
    ctx = bundle.context_length
    if ctx is None or tokens + max_new_tokens <= ctx:
        return frames
    lo, hi = 0, frames  # most frames that fit, assuming tokens grow with frames
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if bundle.video_tokens(info.width, info.height, mid) + max_new_tokens <= ctx:
            lo = mid
        else:
            hi = mid - 1
    hint = f"; lower --num-frames (at most {lo} frames fit)" if lo >= 1 else "; this video does not fit at any frame count"
    _check_context(bundle, tokens, max_new_tokens, f"{frames} frames of {info.width}x{info.height} -> {tokens} video tokens",
                   hint)
    return frames


def _generate(model, inputs, max_new_tokens: int, eos: int | None) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos)


def _ttft_once(model, inputs) -> float:
    """Seconds of prefill + first token: one greedy token through generate."""
    t0 = time.perf_counter()
    _generate(model, inputs, 1, None)
    return time.perf_counter() - t0


def ask(video, question: str, cfg: AskConfig | None = None) -> AskResult:
    """Answer ``question`` about ``video`` (path or frames) with and without pruning.

    The two answers are generated first (they are also each setting's discarded warm-up run);
    then ``cfg.timing_runs`` rounds each time one unpruned and one pruned TTFT, the model
    patched and unpatched around each pruned run.
    """
    import videoprune

    from .bundle import load_bundle

    cfg = cfg or AskConfig()
    info = None
    if isinstance(video, (str, bytes)) or hasattr(video, "__fspath__"):
        from .video import probe

        info = probe(video)  # fail on a missing or broken file before loading a model
    bundle = load_bundle(cfg.model)
    if info is not None:  # refuse a request that cannot fit before decoding a frame
        check_request_fits(bundle, info, cfg.num_frames, cfg.max_new_tokens)
    model, tok = bundle.model, bundle.tokenizer
    inputs = bundle.inputs(video, question, num_frames=cfg.num_frames)
    prompt_len = inputs["input_ids"].shape[1]
    _check_context(bundle, prompt_len, cfg.max_new_tokens, f"{prompt_len} prompt tokens")
    eos = tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tok.get_vocab() else tok.eos_token_id

    def decode(out):
        return tok.decode(out[0, prompt_len:], skip_special_tokens=True).strip()

    answer_unpruned = decode(_generate(model, inputs, cfg.max_new_tokens, eos))
    n_video = int((inputs["input_ids"] == model.config.video_token_id).sum())
    rate, source = _rate(cfg, model)
    prune_cfg = _prune_config(cfg, bundle, rate)
    threads = torch.get_num_threads()
    if prune_cfg is None:
        runs = [_ttft_once(model, inputs) for _ in range(cfg.timing_runs)]
        t = statistics.median(runs)
        return AskResult(answer_unpruned, answer_unpruned, n_video, n_video, [], t, t, cfg.method, bundle.path,
                         None, source, runs, runs, threads)
    handle = videoprune.patch(model, prune_cfg)
    try:
        answer = decode(_generate(model, inputs, cfg.max_new_tokens, eos))
        stats = handle.stats
    finally:
        handle.remove()
    unpruned, pruned = [], []
    for _ in range(cfg.timing_runs):  # interleaved: a burst of load elsewhere hits both settings
        unpruned.append(_ttft_once(model, inputs))
        handle = videoprune.patch(model, prune_cfg)
        try:
            pruned.append(_ttft_once(model, inputs))
        finally:
            handle.remove()
    video_stats = stats.videos[0]
    return AskResult(answer, answer_unpruned, video_stats.tokens_before, video_stats.tokens_after,
                     list(video_stats.kept_per_frame), statistics.median(unpruned), statistics.median(pruned),
                     cfg.method, bundle.path, rate, source, unpruned, pruned, threads)


_SOURCES = {"given": "as given", "model config": "from the model's config", "default": "by default"}


def _ms(runs: list[float]) -> str:
    return f"{statistics.median(runs) * 1e3:.1f} ms ({min(runs) * 1e3:.1f}-{max(runs) * 1e3:.1f})"


def format_answer(r: AskResult) -> str:
    """A short human-readable report; TTFT as median (min-max) of the timed runs, never a bare ratio."""
    lines = [f"answer        {r.answer}"]
    if r.answer != r.answer_unpruned:
        lines.append(f"unpruned      {r.answer_unpruned}   (the unpruned model answers differently)")
    runs = f"median (min-max) of {len(r.ttft_unpruned_runs_s)} runs each, {r.threads} threads"
    if r.kept_per_frame:
        kept = r.tokens_after / r.tokens_before
        setting = f"rate {r.rate:g} {_SOURCES.get(r.rate_source, r.rate_source)}" if r.rate is not None else "threshold mode"
        lines += [
            f"video tokens  {r.tokens_before} -> {r.tokens_after} ({kept:.0%} kept; method {r.method}, {setting})",
            f"kept/slice    {', '.join(map(str, r.kept_per_frame))}",
            f"TTFT          {_ms(r.ttft_unpruned_runs_s)} unpruned -> {_ms(r.ttft_pruned_runs_s)} pruned; {runs}",
        ]
        if r.tokens_before < OVERHEAD_TOKENS:
            lines.append(f"              at {r.tokens_before} video tokens this measures per-call overhead, not pruning "
                         "(see `videoprune bench speed`)")
        elif not r.ttft_separable:
            lines.append("              the two ranges overlap: no TTFT difference measurable in this run")
        else:
            lines.append(f"              {r.speedup:.2f}x (unpruned median / pruned median; the ranges do not overlap)")
    else:
        lines.append(f"video tokens  {r.tokens_before} (no pruning); TTFT {_ms(r.ttft_unpruned_runs_s)}; {runs}")
    lines.append(f"model         {r.model}")
    return "\n".join(lines)
