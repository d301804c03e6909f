"""patch(model, cfg): reversible EVS pruning for a Hugging Face video VLM, for forward and generate.

How it works (no transformers forward is copied):
  1. the inner ``*Model.forward`` is wrapped only to remember the current call's inputs
     (``input_ids``, ``video_grid_thw``, pixels);
  2. the model runs its own code: encoders, scatter of features into ``inputs_embeds``, and
     its own full position ids (``get_rope_index`` for Qwen; generate's 1D ids or ``arange``);
  3. ``language_model.forward`` is wrapped: on prefill with video it reads the video features
     back from ``inputs_embeds``, selects with core.evs, builds a KeepPlan and calls the real
     language model with the gathered embeddings, positions and attention mask (length L');
  4. on decode steps (cache already filled) it maps generate's full-length attention mask
     ``(B, L + s)`` onto the cache's pruned layout ``(B, L' + s)``; position ids from generate
     are already the unpruned ones, and missing ones are rebuilt from the pruned rope delta;
  5. when ``labels`` ``(B, L)`` are passed to the outer ``*ForConditionalGeneration.forward``
     (training), that forward is wrapped to run without them, and the loss is computed by the
     model's own ``loss_function`` on the pruned logits with the labels gathered by the same
     KeepPlan (padding slots -> -100).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from ._swaps import MethodSwaps
from .config import EVSConfig
from .core.plan import KeepPlan, VideoKeepStats, build_plan
from .core.positions import prune_positions, rope_deltas

__all__ = ["PruneHandle", "PruneStats", "disabled", "patch"]

_HANDLE_ATTR = "_videoprune_handle"


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
class _DecodeState:
    full_len: int  # L: prompt length as generate sees it
    pruned_len: int  # L': prompt length in the KV cache
    pruned_mask: torch.Tensor  # (B, L') attention mask of the pruned prompt
    delta: torch.Tensor  # (B, 1): unpruned position = pruned slot + delta


class _PerThread(threading.local):
    """What one call of a patched model carries from wrapper to wrapper, kept per thread.

    A ``threading.local``: each thread that calls the model sees its own fresh copy, so two
    threads running ``generate`` on one patched model never read each other's inputs, plans or
    decode state (torch releases the GIL inside kernels, so their steps do interleave).
    """

    def __init__(self):
        self.call: dict | None = None  # the inner forward's inputs, during that forward
        self.state: _DecodeState | None = None  # the last pruned prefill's layout, for decode steps
        self.plan: KeepPlan | None = None  # plan of the last pruned prefill (labels are gathered with it)
        self.stats: PruneStats | None = None
        # (encoder output, its inputs) of recent get_video_features calls: generate encodes videos
        # before the first forward and passes only the features (no grid, no pixels).
        self.encoded: list = []
        # (pixel_values_videos, keep mask) of recent pre-encoder encodes: the LLM-side plan reuses the mask.
        self.pre_keep: list = []
        self.stts_encoded: list = []  # STTS: (features, keep, ...) of recent encodes
        self.aux_loss: torch.Tensor | None = None  # STTS: the last training call's auxiliary loss
        self.last_selection: tuple = ()  # STTS: per video of the last call
        self.disabled: int = 0  # depth of `disabled()` blocks entered by this thread


def _per_thread(name: str, doc: str) -> property:
    def get(self):
        return getattr(self._local, name)

    def set(self, value):
        setattr(self._local, name, value)

    return property(get, set, doc=doc)


@dataclass(eq=False)
class PruneHandle:
    """Returned by :func:`patch`; ``remove()`` undoes it, ``stats`` describes the last prefill.

    Thread safety: one patched model may be called (``forward``, ``generate``) from several
    threads at once, with the same results as the calls run one after another. Everything a
    call carries between the wrapped methods (its inputs, its keep plan, the decode state that
    maps generate's full-length mask onto the pruned cache) is per thread, and so are
    ``stats`` (the last pruned prefill *of the calling thread*; None in a thread that has not
    run one) and :func:`disabled` (it switches pruning off for the calling thread only).
    ``enabled`` is one switch for all threads: set it between calls, never while another thread
    is inside one. Two calls interleaved in *one* thread (a generator driving two generates
    step by step) are not supported. After ``remove()`` only the calling thread's ``stats`` stay
    readable. ``criterion='random'`` draws depend on the global call
    order, so concurrent random-criterion runs keep tokens in a different order than a
    sequential run would. Loading a scorer or calling ``remove()`` while calls are running is
    not supported.
    """

    model: torch.nn.Module
    config: EVSConfig
    adapter: Any
    enabled: bool = True
    _swaps: MethodSwaps = field(default_factory=MethodSwaps)  # the wrapped methods, undone by remove()
    _local: _PerThread = field(default_factory=_PerThread, repr=False)

    stats = _per_thread("stats", "PruneStats of the calling thread's last pruned prefill (None before one).")
    _call = _per_thread("call", "the current inner forward's inputs (this thread)")
    _state = _per_thread("state", "decode state of this thread's last pruned prefill")
    _plan = _per_thread("plan", "KeepPlan of this thread's last pruned prefill")
    _encoded = _per_thread("encoded", "this thread's recent (encoder output, inputs)")
    _pre_keep = _per_thread("pre_keep", "this thread's recent (pixels, pre-encoder keep mask)")

    @property
    def active(self) -> bool:
        """Whether a call made now by this thread is pruned: ``enabled`` and not inside :func:`disabled`."""
        return self.enabled and not self._local.disabled

    def remove(self) -> None:
        """Restore every wrapped method exactly (instance attributes as they were) and forget the handle."""
        if getattr(self.model, _HANDLE_ATTR, None) is not self:
            raise RuntimeError("this PruneHandle was already removed")
        self._swaps.restore()
        # drop every thread's cached features, plans and decode state; the calling thread's
        # results (stats, STTS aux loss and selection) stay readable after remove()
        old, self._local = self._local, _PerThread()
        for name in ("stats", "aux_loss", "last_selection"):
            setattr(self._local, name, getattr(old, name))
        delattr(self.model, _HANDLE_ATTR)


def patch(model: torch.nn.Module, cfg: "EVSConfig | STTSConfig | None" = None) -> PruneHandle:
    """Make ``model(**inputs)`` and ``model.generate(**inputs)`` prune video tokens before the LLM.

    Args:
        model: a loaded ``*ForConditionalGeneration`` (or its inner ``*Model``) of a supported
            family (``videoprune.models.ADAPTERS``).
        cfg: an :class:`EVSConfig`; default ``EVSConfig()`` (rate 0.75). An
            :class:`~videoprune.stts.STTSConfig` patches STTS instead (Molmo2, Qwen2.5-VL) and
            returns an :class:`~videoprune.stts.hf.STTSHandle`; see docs/stts.md.

    Guarantees: kept tokens, and all text, keep their unpruned position ids; decoding continues
    from the unpruned next position; logits come back in the pruned layout ``(B, L', V)``.
    With ``labels`` ``(B, L)`` (keyword), ``outputs.loss`` is the model's causal-LM loss on that
    pruned layout, labels gathered by the same plan (= the loss of the explicit reference that
    gathers kept embeddings, original positions and labels). Labels on pruned video tokens are
    an error, as are labels on padding (they would silently drop out of the loss): set them to -100.

    Raises:
        ValueError: unsupported model family, or settings the family cannot honour.
        RuntimeError: the model is already patched.
    """
    from .models import adapter_for
    from .stts.config import STTSConfig

    if isinstance(cfg, STTSConfig):  # STTS prunes inside the vision encoder: its own wiring (stts/hf.py)
        from .stts.hf import patch_stts

        return patch_stts(model, cfg)
    cfg = EVSConfig() if cfg is None else cfg
    if not isinstance(cfg, EVSConfig):
        raise ValueError(f"cfg must be an EVSConfig, got {type(cfg).__name__}")
    if getattr(model, _HANDLE_ATTR, None) is not None:
        raise RuntimeError("model is already patched by videoprune; call handle.remove() first")
    adapter = adapter_for(model)
    adapter.check_config(cfg)
    handle = PruneHandle(model=model, config=cfg, adapter=adapter)
    _install(handle)
    return handle


def cached_length(call: dict) -> int:
    """Tokens already in the KV cache of a forward call: 0 on prefill.

    The cache arrives as ``past_key_values`` (transformers 5.23) or ``cache`` (the name 5.24+
    moves to; both are accepted there until 5.40).
    """
    cache = call.get("cache")
    if cache is None:
        cache = call.get("past_key_values")
    return int(cache.get_seq_length()) if cache is not None else 0


def _install(handle: PruneHandle) -> None:
    """Wrap the inner forward, get_video_features and the language model's forward for ``handle``.

    Shared with STTS on Qwen (stts/hf.py): any adapter whose ``select`` returns the keep mask.
    """
    model, adapter = handle.model, handle.adapter
    inner, lm = adapter.inner, adapter.language_model
    inner_fwd, lm_fwd, encode = inner.forward, lm.forward, inner.get_video_features
    inner_sig, encode_sig = inspect.signature(inner_fwd), inspect.signature(encode)

    # functools.wraps keeps the signatures visible: generate inspects get_video_features' parameters.
    @functools.wraps(encode)
    def get_video_features(*args, **kwargs):
        inputs = encode_sig.bind_partial(*args, **kwargs).arguments
        if handle.active and _is_pre_encoder(handle):
            out = _encode_pre_encoder(handle, inputs)
        else:
            out = encode(*args, **kwargs)
        handle._encoded = handle._encoded[-3:] + [(out, inputs)]
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
        past = cached_length(kwargs)
        if past == 0:
            handle._state = None
            if not handle.active:
                return lm_fwd(**kwargs)
            call = _resolve_call(handle) if handle._call is not None else None
            layout = adapter.video_layout(call) if call is not None else None
            if layout is None:
                return lm_fwd(**kwargs)
            return lm_fwd(**_prefill(handle, layout, kwargs, call))
        if handle._state is None:  # this thread's prefill was not pruned
            return lm_fwd(**kwargs)
        # a pruned prefill's cache stays pruned: its decode steps are mapped even if pruning was
        # switched off meanwhile (passing the full-length mask through would not fit the cache)
        return lm_fwd(**_decode(handle, kwargs, past))

    wrapped = [(inner, "forward", inner_forward), (lm, "forward", lm_forward),
               (inner, "get_video_features", get_video_features)]
    if inner is not model:  # a *ForConditionalGeneration: it owns lm_head and the loss
        outer_fwd = model.forward

        @functools.wraps(outer_fwd)
        def outer_forward(*args, **kwargs):
            labels = kwargs.pop("labels", None)
            if labels is None or not handle.active:
                return outer_fwd(*args, **kwargs) if labels is None else outer_fwd(*args, labels=labels, **kwargs)
            return _forward_with_labels(handle, outer_fwd, args, kwargs, labels)

        wrapped.append((model, "forward", outer_forward))
    for module, name, fn in wrapped:
        handle._swaps.swap(module, name, fn)
    setattr(model, _HANDLE_ATTR, handle)


def _forward_with_labels(handle: PruneHandle, outer_fwd, args, kwargs: dict, labels: torch.Tensor):
    """Run the outer forward without labels, then the model's loss on the pruned layout."""
    if kwargs.get("logits_to_keep", 0) not in (0, None):
        raise ValueError("labels with logits_to_keep != 0 are not supported by the videoprune patch")
    if kwargs.get("return_dict") is False:
        raise ValueError("labels with return_dict=False are not supported by the videoprune patch")
    handle._plan = None
    out = outer_fwd(*args, **kwargs)
    plan, handle._plan = handle._plan, None
    loss_kwargs = {k: kwargs[k] for k in ("num_items_in_batch", "ignore_index") if k in kwargs}
    loss = pruned_loss(handle.model, out.logits, labels, plan, **loss_kwargs)
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


def _is_pre_encoder(handle: PruneHandle) -> bool:
    """EVS with stage='pre_encoder' (STTS configs have no stage: they prune inside the encoder)."""
    return getattr(handle.config, "stage", None) == "pre_encoder"


def _resolve_call(handle: PruneHandle) -> dict:
    """The current call's inputs, with grid and pixels recovered for pre-encoded videos."""
    call = handle._call
    encoded = (call.get("mm_encoder_outputs") or {}).get("video")
    if encoded is None or call.get("pixel_values_videos") is not None:
        return call
    for out, inputs in reversed(handle._encoded):
        if out is encoded:
            merged = dict(call)
            for key, value in inputs.items():
                if merged.get(key) is None:
                    merged[key] = value
            return merged
    raise ValueError("videoprune cannot prune video features that were encoded outside the patched model "
                     "(or expanded, e.g. num_return_sequences > 1): pass pixel_values_videos instead")


def _full_positions(handle: PruneHandle, kwargs: dict, batch: int, length: int, device) -> torch.Tensor:
    """The unpruned batch's position ids as the model would use them: ``(3, B, L)`` or ``(B, L)``."""
    axes = handle.adapter.position_axes
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


def _prefill(handle: PruneHandle, layout, kwargs: dict, call: dict) -> dict:
    """Prune a prefill; ``call`` is the current call's inputs with pre-encoded videos resolved."""
    adapter, cfg = handle.adapter, handle.config
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
    grid_keep = _pre_encoder_keep(handle) if _is_pre_encoder(handle) else None
    if grid_keep is None:
        # Selection is a hard top-k (no gradient); detached so that training with autograd works.
        grid_keep = adapter.select(cfg, layout, features.detach(), call)
    grid_keep = grid_keep.to(embeds.device)
    if on_grid is None:
        video_keep, grid_for_stats = grid_keep, layout.grid_thw
    else:
        video_keep = torch.ones(video_embeds.shape[0], dtype=torch.bool, device=embeds.device)
        video_keep[on_grid.to(embeds.device)] = grid_keep
        grid_for_stats = None
    plan: KeepPlan = build_plan(placeholder, video_keep, attn, grid_thw=grid_for_stats,
                                spatial_merge_size=layout.spatial_merge_size, padding_side="left")
    videos = plan.videos if on_grid is None else _grid_stats(grid_keep, layout)
    positions = prune_positions(_full_positions(handle, kwargs, batch, length, embeds.device), plan)
    new_mask = plan.attention_mask.to(embeds.device)
    if attn is not None:
        new_mask = new_mask.to(attn.dtype)
    out = dict(kwargs, inputs_embeds=plan.gather(embeds), position_ids=positions, attention_mask=new_mask)
    out = adapter.prune_lm_kwargs(out, plan)
    handle._plan = plan
    handle._state = _DecodeState(full_len=length, pruned_len=plan.pruned_length, pruned_mask=new_mask,
                                 delta=rope_deltas(positions, plan))
    handle.stats = PruneStats(videos=tuple(videos), sequence_length_before=length,
                              sequence_length_after=plan.pruned_length)
    return out


def _encode_pre_encoder(handle: PruneHandle, inputs: dict):
    """Pre-encoder EVS in place of ``get_video_features``: encode kept tokens only.

    Returns what the model's own ``get_video_features`` returns (per-video ``pooler_output``
    of full length, and Qwen3-VL's deepstack features likewise, so the model's placeholder
    scatter is unchanged); pruned rows are zeros and are dropped again at the LLM input with the
    same keep mask (the family adapter builds the output: ``pre_encoder_video_output``).
    """
    pixels, grid = inputs.get("pixel_values_videos"), inputs.get("video_grid_thw")
    if pixels is None or grid is None:
        raise ValueError("stage='pre_encoder' needs pixel_values_videos and video_grid_thw")
    encoded = handle.adapter.encode_videos_pre_encoder(handle.config, pixels, grid)
    handle._pre_keep = handle._pre_keep[-3:] + [(pixels, encoded.keep)]
    out = handle.adapter.pre_encoder_video_output(encoded, grid)
    if (inputs.get("kwargs") or {}).get("return_dict") is False:
        return out.to_tuple()
    return out


def _pre_encoder_keep(handle: PruneHandle) -> torch.Tensor | None:
    """The keep mask that the pre-encoder pass used for the current call's videos (None if none)."""
    pixels = _resolve_call(handle).get("pixel_values_videos")
    for px, keep in reversed(handle._pre_keep):
        if px is pixels:
            return keep
    return None


def _grid_stats(grid_keep: torch.Tensor, layout) -> list[VideoKeepStats]:
    from .core.evs import normalize_grids

    stats, start = [], 0
    for t, h, w in normalize_grids(layout.grid_thw, layout.spatial_merge_size):
        per_frame = grid_keep[start : start + t * h * w].view(t, h * w).sum(dim=1).tolist()
        stats.append(VideoKeepStats(t * h * w, int(sum(per_frame)), tuple(int(c) for c in per_frame)))
        start += t * h * w
    return stats


def _decode(handle: PruneHandle, kwargs: dict, past: int) -> dict:
    st = handle._state
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


def _handle_of(model) -> PruneHandle:
    handle = getattr(model, _HANDLE_ATTR, None)
    if handle is None:
        raise ValueError("model is not patched by videoprune")
    return handle


@contextlib.contextmanager
def disabled(model: torch.nn.Module):
    """Temporarily run ``model`` unpruned (exactly the original computation); restores on exit.

    Per thread: calls made by other threads meanwhile are pruned as before.
    """
    handle = _handle_of(model)
    local = handle._local
    local.disabled += 1
    local.state = None
    try:
        yield handle
    finally:
        local.disabled -= 1
