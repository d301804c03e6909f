"""The LLM-side layer every pruning method builds on: handle, prefill/decode, encode cache, timings, pruned loss.

EVS (:mod:`videoprune.patch`) and STTS (:mod:`videoprune.stts.hf` and the ``models/stts_*``
families) prune different things, but once a method knows which video tokens stay, the rest
is the same for all of them and lives here:

* :class:`PruneHandle`, the reversible handle (per-thread call state, ``stats``, ``disabled``,
  ``remove``), with hooks a method overrides (:meth:`PruneHandle.encode_videos`,
  :meth:`PruneHandle.keep_mask`, :meth:`PruneHandle.begin_forward`,
  :meth:`PruneHandle.finish_forward`);
* prefill and decode: :func:`record_prefill` stores a pruned prefill's plan, decode state and
  stats; :func:`decode_kwargs` maps generate's full-length mask onto the pruned cache;
  :func:`route_call` sends each forward to one or the other;
* :func:`install_llm_input`: pruning at the language model's input for any adapter whose
  ``select`` returns the keep mask (EVS on every family, STTS on Qwen2.5-VL);
* :class:`EncodeCache`: the last few encoder calls of a thread, found again by identity;
* phase timings (``handle.timing``, ``handle.timings``: encode, select, prefill);
* the one labels/loss wrapper (:func:`install_loss`, :func:`pruned_loss`).

Nothing here imports transformers, the family adapters or a method's config.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ._swaps import MethodSwaps
from .core.plan import KeepPlan, VideoKeepStats, build_plan, video_keep_stats
from .core.positions import prune_positions, rope_deltas

__all__ = [
    "HANDLE_ATTR",
    "PHASES",
    "DecodeState",
    "EncodeCache",
    "PruneHandle",
    "PruneStats",
    "bound_call",
    "cached_length",
    "check_unpatched",
    "decode_kwargs",
    "disabled",
    "full_positions",
    "handle_of",
    "install_llm_input",
    "install_loss",
    "per_thread",
    "pruned_loss",
    "record_prefill",
    "resolve_call",
    "route_call",
    "time_prefill",
]

#: the model attribute that holds its handle while patched
HANDLE_ATTR = "_videoprune_handle"

#: the phases a handle times: the vision encoder, token selection, the language model's prefill
PHASES = ("encode", "select", "prefill")


@dataclass(frozen=True)
class PruneStats:
    """Counts from the last pruned prefill.

    Attributes:
        videos: per video (in feature order), tokens before/after and kept per temporal slice.
        sequence_length_before / sequence_length_after: padded batch length L and L'.
    """

    videos: tuple[VideoKeepStats, ...] = ()
    sequence_length_before: int = 0
    sequence_length_after: int = 0

    @property
    def tokens_before(self) -> int:
        return sum(v.tokens_before for v in self.videos)

    @property
    def tokens_after(self) -> int:
        return sum(v.tokens_after for v in self.videos)


@dataclass
class DecodeState:
    """What a pruned prefill leaves for its decode steps."""

    full_len: int  # L: prompt length as generate sees it
    pruned_len: int  # L': prompt length in the KV cache
    pruned_mask: torch.Tensor  # (B, L') attention mask of the pruned prompt
    delta: torch.Tensor  # (B, 1): unpruned position = pruned slot + delta


class EncodeCache:
    """The last few encoder calls of one thread, each ``(output, *what it came from)``, found by identity.

    generate encodes videos before its first forward and then passes only the output, so the
    wrappers find what they need (grid, pixels, keep mask) again by the output object itself.
    """

    size: ClassVar[int] = 4

    def __init__(self):
        self.entries: list[tuple] = []

    def add(self, *entry) -> None:
        """Remember one encode; ``entry[0]`` is the key (the encoder's output or its input)."""
        self.entries = self.entries[1 - self.size:] + [entry]

    def find(self, key) -> tuple | None:
        """The latest entry whose first item *is* ``key``, else None."""
        for entry in reversed(self.entries):
            if entry[0] is key:
                return entry
        return None

    def latest(self) -> tuple | None:
        return self.entries[-1] if self.entries else None


class _PerThread(threading.local):
    """What one call of a patched model carries from wrapper to wrapper, kept per thread.

    A ``threading.local``: each thread that calls the model sees its own fresh copy, so two
    threads running ``generate`` on one patched model never read each other's inputs, plans or
    decode state (torch releases the GIL inside kernels, so their steps do interleave).
    Methods add their own fields through :func:`per_thread` (absent until set).
    """

    def __init__(self):
        self.call: dict | None = None  # the inner forward's inputs, during that forward
        self.state: DecodeState | None = None  # the last pruned prefill's layout, for decode steps
        self.plan: KeepPlan | None = None  # plan of the last pruned prefill (labels are gathered with it)
        self.stats: PruneStats | None = None
        self.encodes: dict[str, EncodeCache] = {}  # recent encoder calls, by kind
        self.disabled: int = 0  # depth of `disabled()` blocks entered by this thread
        self.timings: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.open_phases: list[float] = []  # per open phase, the time spent in phases nested in it


def per_thread(name: str, doc: str, default: Any = None) -> property:
    """A handle property stored per thread (``default`` in a thread that has not set it)."""

    def get(self):
        return getattr(self._local, name, default)

    def set(self, value):
        setattr(self._local, name, value)

    return property(get, set, doc=doc)


class _Phase:
    """Adds the wall time of its block, minus that of phases nested in it, to one phase's total."""

    __slots__ = ("local", "name", "start")

    def __init__(self, local: _PerThread, name: str):
        self.local, self.name = local, name

    @staticmethod
    def now() -> float:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # kernels run asynchronously: wait for the block's own work
        return time.perf_counter()

    def __enter__(self):
        self.local.open_phases.append(0.0)
        self.start = self.now()

    def __exit__(self, *exc) -> None:
        elapsed = self.now() - self.start
        nested = self.local.open_phases.pop()
        self.local.timings[self.name] = self.local.timings.get(self.name, 0.0) + elapsed - nested
        if self.local.open_phases:
            self.local.open_phases[-1] += elapsed


_UNTIMED = contextlib.nullcontext()


@dataclass(eq=False)
class PruneHandle:
    """Returned by :func:`videoprune.patch`; ``remove()`` undoes it, ``stats`` describes the last prefill.

    Thread safety: one patched model may be called (``forward``, ``generate``) from several
    threads at once, with the same results as the calls run one after another. Everything a
    call carries between the wrapped methods (its inputs, its keep plan, the decode state that
    maps generate's full-length mask onto the pruned cache) is per thread, and so are
    ``stats`` (the last pruned prefill *of the calling thread*; None in a thread that has not
    run one), ``timings`` and :func:`disabled` (it switches pruning off for the calling thread
    only). ``enabled`` and ``timing`` are one switch for all threads: set them between calls,
    never while another thread is inside one. Two calls interleaved in *one* thread (a
    generator driving two generates step by step) are not supported. After ``remove()`` only
    the calling thread's results (``stats``, ``timings``) stay readable. ``criterion='random'``
    draws depend on the global call order, so concurrent random-criterion runs keep tokens in a
    different order than a sequential run would. Loading a scorer or calling ``remove()`` while
    calls are running is not supported.

    Timings: with ``timing = True`` the calling thread's ``timings`` add up the wall seconds of
    each phase (``encode``: the vision encoder; ``select``: scoring and choosing the kept
    tokens; ``prefill``: the language model's forward on a prompt, plan and gather included),
    each without the phases nested in it, synchronising CUDA around each. Off by default, so
    normal calls pay nothing; :meth:`reset_timings` starts again from zero.
    """

    model: torch.nn.Module
    config: Any
    adapter: Any
    enabled: bool = True
    timing: bool = False
    _swaps: MethodSwaps = field(default_factory=MethodSwaps)  # the wrapped methods, undone by remove()
    _local: _PerThread = field(default_factory=_PerThread, repr=False)

    #: per-thread results that stay readable after remove()
    kept_after_remove: ClassVar[tuple[str, ...]] = ("stats", "timings")

    stats = per_thread("stats", "PruneStats of the calling thread's last pruned prefill (None before one).")
    _call = per_thread("call", "the current inner forward's inputs (this thread)")
    _state = per_thread("state", "decode state of this thread's last pruned prefill")
    _plan = per_thread("plan", "KeepPlan of this thread's last pruned prefill")

    @property
    def active(self) -> bool:
        """Whether a call made now by this thread is pruned: ``enabled`` and not inside :func:`disabled`."""
        return self.enabled and not self._local.disabled

    @property
    def plan(self) -> KeepPlan | None:
        """The :class:`KeepPlan` of the calling thread's last outer forward, if that was a pruned prefill.

        None after an unpruned call and after a decode step: each outer forward starts by clearing
        it, so after ``generate`` (which ends on decode steps) read ``stats`` instead, or call the
        model once for the prefill and read ``plan`` then.
        """
        return self._plan

    @property
    def decode_state(self) -> DecodeState | None:
        """The calling thread's pruned-prefill layout its decode steps continue (None if that prefill was not pruned)."""
        return self._state

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per phase (:data:`PHASES`) of the calling thread's calls since timing began (a copy)."""
        return dict(self._local.timings)

    def reset_timings(self) -> None:
        """Set the calling thread's phase totals back to zero."""
        self._local.timings = dict.fromkeys(PHASES, 0.0)

    def phase(self, name: str) -> contextlib.AbstractContextManager:
        """A context manager adding its block's time to phase ``name``; does nothing unless ``timing``."""
        return _Phase(self._local, name) if self.timing else _UNTIMED

    def encodes(self, kind: str) -> EncodeCache:
        """The calling thread's cache of recent encoder calls of one ``kind``."""
        caches = self._local.encodes
        if kind not in caches:
            caches[kind] = EncodeCache()
        return caches[kind]

    def swap(self, module: torch.nn.Module, name: str, fn: Callable) -> None:
        """Replace ``module.name`` by ``fn`` (an instance attribute), undone by :meth:`remove`."""
        self._swaps.swap(module, name, fn)

    def attach(self) -> None:
        """Mark the model as patched by this handle (after its methods are wrapped)."""
        setattr(self.model, HANDLE_ATTR, self)

    def remove(self) -> None:
        """Restore every wrapped method exactly (instance attributes as they were) and forget the handle."""
        if getattr(self.model, HANDLE_ATTR, None) is not self:
            raise RuntimeError("this PruneHandle was already removed")
        self._swaps.restore()
        # drop every thread's cached features, plans and decode state; the calling thread's
        # results stay readable after remove()
        old, self._local = self._local, _PerThread()
        for name in self.kept_after_remove:
            if hasattr(old, name):
                setattr(self._local, name, getattr(old, name))
        delattr(self.model, HANDLE_ATTR)

    # ---- hooks a method overrides --------------------------------------------------------------
    def encode_videos(self, encode: Callable, args: tuple, kwargs: dict, inputs: dict):
        """Run the video encoder for one pruned ``get_video_features`` call (``inputs``: its bound arguments)."""
        return encode(*args, **kwargs)

    def keep_mask(self, layout, features: torch.Tensor, call: dict) -> torch.Tensor:
        """``(N_grid,)`` bool keep mask over the grid tokens of the current prefill: the adapter's selection."""
        with self.phase("select"):
            # a hard top-k (no gradient); detached so that training with autograd works
            return self.adapter.select(self.config, layout, features.detach(), call)

    def begin_forward(self) -> None:
        """Called as the outer forward starts: forget the previous call's plan."""
        self._plan = None

    def finish_forward(self, out):
        """Called with the outer forward's output; returns what the caller gets."""
        return out


def check_unpatched(model: torch.nn.Module) -> None:
    """RuntimeError if ``model`` already carries a videoprune handle."""
    if getattr(model, HANDLE_ATTR, None) is not None:
        raise RuntimeError("model is already patched by videoprune; call handle.remove() first")


def handle_of(model: torch.nn.Module) -> PruneHandle:
    """The handle ``model`` is patched with; ValueError if it is not patched."""
    handle = getattr(model, HANDLE_ATTR, None)
    if handle is None:
        raise ValueError("model is not patched by videoprune")
    return handle


@contextlib.contextmanager
def disabled(model: torch.nn.Module):
    """Temporarily run ``model`` unpruned (exactly the original computation); restores on exit.

    Per thread: calls made by other threads meanwhile are pruned as before.
    """
    handle = handle_of(model)
    local = handle._local
    local.disabled += 1
    local.state = None
    try:
        yield handle
    finally:
        local.disabled -= 1


# ---- prefill and decode ------------------------------------------------------------------------
def cached_length(call: dict) -> int:
    """Tokens already in the KV cache of a forward call: 0 on prefill.

    The cache arrives as ``past_key_values`` (transformers 5.23) or ``cache`` (the name 5.24+
    moves to; both are accepted there until 5.40).
    """
    cache = call.get("cache")
    if cache is None:
        cache = call.get("past_key_values")
    return int(cache.get_seq_length()) if cache is not None else 0


def bound_call(sig: inspect.Signature, args: tuple, kwargs: dict) -> dict:
    """A call's arguments by name (``**kwargs`` of the signature spread out), for wrappers that read or edit them."""
    if not args:
        return dict(kwargs)
    call = sig.bind_partial(*args, **kwargs).arguments
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD and isinstance(call.get(p.name), dict):
            call.update(call.pop(p.name))
    return call


def full_positions(kwargs: dict, batch: int, length: int, device, axes: int) -> torch.Tensor:
    """The unpruned batch's position ids as the model would use them: ``(3, B, L)`` (``axes=3``) or ``(B, L)``."""
    pos = kwargs.get("position_ids")
    if pos is None:  # what the language model does itself without ids
        pos = torch.arange(length, device=device).expand(batch, length)
        return pos.expand(3, batch, length) if axes == 3 else pos
    if axes == 3:
        if pos.dim() == 2:
            pos = pos.unsqueeze(0).expand(3, -1, -1)
        if pos.shape[0] == 4:  # generate prepends text-only ids (used only for packed masks)
            pos = pos[1:]
        return pos.expand(3, batch, length)
    return pos.expand(batch, length)


def record_prefill(handle: PruneHandle, plan: KeepPlan, full_pos: torch.Tensor, attn: torch.Tensor | None,
                   videos, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Store a pruned prefill on ``handle`` (plan, decode state, stats); returns its ``(positions, attention mask)``.

    ``full_pos`` are the unpruned position ids (:func:`full_positions`); the kept tokens keep
    theirs. The mask ``(B, L')`` is on ``device``, in ``attn``'s dtype when a mask was given.
    """
    length = plan.keep.shape[1]
    positions = prune_positions(full_pos, plan)
    new_mask = plan.attention_mask.to(device)
    if attn is not None:
        new_mask = new_mask.to(attn.dtype)
    handle._plan = plan
    handle._state = DecodeState(full_len=length, pruned_len=plan.pruned_length, pruned_mask=new_mask,
                                delta=rope_deltas(positions, plan))
    handle.stats = PruneStats(videos=tuple(videos), sequence_length_before=length,
                              sequence_length_after=plan.pruned_length)
    return positions, new_mask


def decode_kwargs(handle: PruneHandle, kwargs: dict, past: int) -> dict:
    """A decode step's kwargs mapped onto the pruned cache: mask ``(B, L + s)`` -> ``(B, L' + s)``, positions continued."""
    st = handle.decode_state
    x = kwargs.get("inputs_embeds")
    q = x.shape[1] if x is not None else kwargs["input_ids"].shape[1]
    out = dict(kwargs)
    attn = kwargs.get("attention_mask")
    if attn is not None:
        if not (isinstance(attn, torch.Tensor) and attn.dim() == 2):
            raise ValueError("videoprune needs a 2D attention mask (B, L + steps) while decoding; 4D masks and "
                             "static (compileable) caches are not supported")
        if attn.shape[1] - st.full_len != past - st.pruned_len + q:
            raise RuntimeError(
                f"attention mask of length {attn.shape[1]} does not continue the pruned prompt "
                f"(unpruned {st.full_len}, cached {past} of which {st.pruned_len} prompt, {q} new): "
                "start a new prompt with a fresh cache")
        out["attention_mask"] = torch.cat([st.pruned_mask.to(attn), attn[:, st.full_len:]], dim=1)
    if kwargs.get("position_ids") is None:
        device = (x if x is not None else kwargs["input_ids"]).device
        pos = torch.arange(past, past + q, device=device).unsqueeze(0) + st.delta.to(device)
        out["position_ids"] = pos.unsqueeze(0).expand(3, -1, -1) if handle.adapter.position_axes == 3 else pos
    return out


def route_call(handle: PruneHandle, fwd: Callable, kwargs: dict, prefill: Callable[[dict], dict],
               decode: Callable[[PruneHandle, dict, int], dict] = decode_kwargs, timed: bool = True):
    """Run ``fwd`` on a call: a prefill through ``prefill(kwargs)`` (which prunes it or returns it as is),
    a decode step of a pruned prefill through ``decode`` (a pruned cache stays pruned, even if
    pruning was switched off meanwhile: the full-length mask would not fit it). ``timed``: the
    prefill counts as the ``prefill`` phase."""
    past = cached_length(kwargs)
    if past == 0:
        handle._state = None
        with handle.phase("prefill") if timed else _UNTIMED:
            return fwd(**(prefill(kwargs) if handle.active else kwargs))
    if handle.decode_state is None:  # this thread's prefill was not pruned
        return fwd(**kwargs)
    return fwd(**decode(handle, kwargs, past))


def time_prefill(handle: PruneHandle, module: torch.nn.Module) -> None:
    """Time ``module.forward``'s prefill calls as the ``prefill`` phase (for methods that prune above it)."""
    fwd = module.forward

    @functools.wraps(fwd)
    def forward(*args, **kwargs):
        if not handle.timing or cached_length(kwargs) != 0:
            return fwd(*args, **kwargs)
        with handle.phase("prefill"):
            return fwd(*args, **kwargs)

    handle.swap(module, "forward", forward)


# ---- pruning at the language model's input --------------------------------------------------------
def install_llm_input(handle: PruneHandle) -> None:
    """Wrap the inner forward, ``get_video_features`` and the language model's forward for ``handle``.

    For any adapter (``handle.adapter``) with ``inner``, ``language_model``, ``video_layout``,
    ``select`` (through :meth:`PruneHandle.keep_mask`), ``prune_lm_kwargs`` and
    ``position_axes``: the model builds its own full ``inputs_embeds`` and position ids, and
    the prefill is pruned at the language model's input.
    """
    adapter = handle.adapter
    inner, lm = adapter.inner, adapter.language_model
    inner_fwd, lm_fwd, encode = inner.forward, lm.forward, inner.get_video_features
    inner_sig, encode_sig = inspect.signature(inner_fwd), inspect.signature(encode)

    # functools.wraps keeps the signatures visible: generate inspects get_video_features' parameters.
    @functools.wraps(encode)
    def get_video_features(*args, **kwargs):
        inputs = encode_sig.bind_partial(*args, **kwargs).arguments
        with handle.phase("encode"):
            out = handle.encode_videos(encode, args, kwargs, inputs) if handle.active else encode(*args, **kwargs)
        handle.encodes("features").add(out, inputs)
        return out

    @functools.wraps(inner_fwd)
    def inner_forward(*args, **kwargs):
        call = inner_sig.bind_partial(*args, **kwargs).arguments if args else kwargs
        outer, handle._call = handle._call, call
        try:
            return inner_fwd(*args, **kwargs)
        finally:
            handle._call = outer

    @functools.wraps(lm_fwd)
    def lm_forward(*args, **kwargs):
        if args:
            raise TypeError("videoprune expects the language model to be called with keyword arguments")
        return route_call(handle, lm_fwd, kwargs, functools.partial(_prune_llm_input, handle))

    handle.swap(inner, "forward", inner_forward)
    handle.swap(lm, "forward", lm_forward)
    handle.swap(inner, "get_video_features", get_video_features)


def resolve_call(handle: PruneHandle) -> dict:
    """The current call's inputs, with grid and pixels recovered for pre-encoded videos."""
    call = handle._call
    encoded = (call.get("mm_encoder_outputs") or {}).get("video")
    if encoded is None or call.get("pixel_values_videos") is not None:
        return call
    entry = handle.encodes("features").find(encoded)
    if entry is None:
        raise ValueError("videoprune cannot prune video features that were encoded outside the patched model "
                         "(or expanded, e.g. num_return_sequences > 1): pass pixel_values_videos instead")
    merged = dict(call)
    for key, value in entry[1].items():
        if merged.get(key) is None:
            merged[key] = value
    return merged


def _prune_llm_input(handle: PruneHandle, kwargs: dict) -> dict:
    """The language model's prefill kwargs, pruned when the current call carries video."""
    if handle._call is None:
        return kwargs
    call = resolve_call(handle)
    layout = handle.adapter.video_layout(call)
    return kwargs if layout is None else _prefill(handle, layout, kwargs, call)


def _prefill(handle: PruneHandle, layout, kwargs: dict, call: dict) -> dict:
    """Prune a prefill; ``call`` is the current call's inputs with pre-encoded videos resolved."""
    adapter = handle.adapter
    embeds = kwargs.get("inputs_embeds")
    if embeds is None:
        raise RuntimeError("expected the model to call its language model with inputs_embeds")
    batch, length = embeds.shape[:2]
    attn = kwargs.get("attention_mask")
    if attn is not None and not (isinstance(attn, torch.Tensor) and attn.dim() == 2):
        raise ValueError("videoprune needs a 2D attention mask (B, L); 4D/precomputed masks and static "
                         "caches are not supported")
    placeholder = layout.placeholder_mask.to(embeds.device)
    video_embeds = embeds[placeholder]
    on_grid = layout.grid_token_mask
    features = video_embeds if on_grid is None else video_embeds[on_grid.to(embeds.device)]
    grid_keep = handle.keep_mask(layout, features, call).to(embeds.device)
    if on_grid is None:
        video_keep, grid_for_stats = grid_keep, layout.grid_thw
    else:
        video_keep = torch.ones(video_embeds.shape[0], dtype=torch.bool, device=embeds.device)
        video_keep[on_grid.to(embeds.device)] = grid_keep
        grid_for_stats = None
    plan = build_plan(placeholder, video_keep, attn, grid_thw=grid_for_stats,
                      spatial_merge_size=layout.spatial_merge_size, padding_side="left")
    videos = plan.videos if on_grid is None else video_keep_stats(
        grid_keep, layout.grid_thw, layout.spatial_merge_size)
    full = full_positions(kwargs, batch, length, embeds.device, adapter.position_axes)
    positions, new_mask = record_prefill(handle, plan, full, attn, videos, embeds.device)
    out = dict(kwargs, inputs_embeds=plan.gather(embeds), position_ids=positions, attention_mask=new_mask)
    return adapter.prune_lm_kwargs(out, plan)


# ---- labels and loss ------------------------------------------------------------------------------
def install_loss(handle: PruneHandle) -> None:
    """Wrap the outer ``*ForConditionalGeneration.forward`` so that full-length ``labels`` fit the pruned logits.

    With ``labels`` and pruning active the forward runs without them and ``outputs.loss`` is
    :func:`pruned_loss` on the pruned layout (``num_items_in_batch`` and ``ignore_index`` passed
    on); otherwise the labels reach the model's own forward. The handle's
    :meth:`~PruneHandle.begin_forward` / :meth:`~PruneHandle.finish_forward` run around every
    call. An inner ``*Model`` (no ``lm_head``, no loss) is left as it is.
    """
    model = handle.model
    if model is handle.adapter.inner:
        return
    fwd = model.forward
    sig = inspect.signature(fwd)

    @functools.wraps(fwd)
    def forward(*args, **kwargs):
        call = bound_call(sig, args, kwargs)
        labels = call.pop("labels", None)
        handle.begin_forward()
        if labels is None:
            out = fwd(**call)
        elif not handle.active:
            out = fwd(labels=labels, **call)
        else:
            out = _forward_with_labels(handle, fwd, call, labels)
        return handle.finish_forward(out)

    handle.swap(model, "forward", forward)


def _forward_with_labels(handle: PruneHandle, fwd: Callable, call: dict, labels: torch.Tensor):
    """Run the outer forward without labels, then the model's loss on the pruned layout."""
    if call.get("logits_to_keep", 0) not in (0, None):
        raise ValueError("labels with logits_to_keep != 0 are not supported by the videoprune patch")
    if call.get("return_dict") is False:
        raise ValueError("labels with return_dict=False are not supported by the videoprune patch")
    out = fwd(**call)
    loss_kwargs = {k: call[k] for k in ("num_items_in_batch", "ignore_index") if k in call}
    loss = pruned_loss(handle.model, out.logits, labels, handle.plan, **loss_kwargs)
    return type(out)(**{"loss": loss, **{k: v for k, v in out.items() if k != "loss"}})


def pruned_loss(model, logits: torch.Tensor, labels: torch.Tensor, plan: KeepPlan | None, **loss_kwargs) -> torch.Tensor:
    """The model's own causal-LM loss on pruned logits ``(B, L', V)`` with full-length labels ``(B, L)``.

    Labels are gathered with the prefill's ``plan`` (padding slots -> -100); with no plan (no
    video in the call) they are used as given. Labels on tokens the pruned batch drops (pruned
    video tokens, padding) are an error, never silently left out of the loss.
    """
    if plan is not None:
        labels = labels.to(plan.keep.device)
        if labels.shape != plan.keep.shape:
            raise ValueError(f"labels must have the shape of input_ids {tuple(plan.keep.shape)}, got {tuple(labels.shape)}")
        if bool((~plan.keep & (labels != -100)).any()):
            raise ValueError("labels are set on tokens the pruned batch drops (pruned video tokens or padding); "
                             "set labels to -100 there: the loss belongs on answer tokens")
        labels = plan.gather(labels).masked_fill(plan.attention_mask == 0, -100)
    return model.loss_function(logits=logits, labels=labels.to(logits.device),
                               vocab_size=model.config.get_text_config().vocab_size, **loss_kwargs)
