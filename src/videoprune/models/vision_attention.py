"""Qwen vision-tower attention in one call per block instead of one call per window or temporal slice.

Why: transformers' Qwen2-VL / Qwen2.5-VL / Qwen3-VL vision attention (5.23 and 5.25 alike) asks
``is_flash_attention_requested(config)``, i.e. ``"flash" in config._attn_implementation``. If it
is, it calls the registered attention function ONCE per block with the packed sequence
(``query/key/value`` of shape ``(1, H, S, D)``, ``attention_mask=None``) and the segment
boundaries as ``cu_seq_lens_q`` / ``cu_seq_lens_k`` (int32, ``(N+1,)``) and ``max_length_q`` /
``max_length_k`` (int); it expects ``(1, S, H, D)`` back. Otherwise it splits the sequence at
``cu_seqlens`` and calls attention once per segment: about 900 calls per block for a
Qwen2.5-VL-7B tower at 128 frames, which leaves an H200 mostly idle.

:func:`segment_attention_forward` is registered with ``transformers.AttentionInterface`` under
:data:`ATTN_NAME` (the name contains "flash" for exactly that check, and no digit, so no
version-specific flash check such as ``flash.*2`` matches it). It computes attention within
each segment:

* CUDA, fp16/bf16, ``torch.nn.attention.varlen.varlen_attn`` available (torch >= 2.9): one
  ``varlen_attn`` call over all segments (flash-attention kernels inside torch);
* elsewhere (CPU, fp32, a float bias, dropout, causal): segments of equal length are stacked
  into a batch and ``F.scaled_dot_product_attention`` runs once per distinct length. Each
  batch row is the same computation as a per-segment SDPA call.

:func:`enable_fast_vision_attention` switches a model's vision tower to it (opt-in; the
language model keeps its own implementation) and returns a handle whose ``remove()``
restores the previous implementation.

What was verified where: on the CPU (torch 2.13, transformers 5.23, fp32) the towers of tiny
random Qwen2-VL / Qwen2.5-VL / Qwen3-VL models match their own SDPA encoders within 1e-5 and
the batched path matches per-segment SDPA (tests/models/test_vision_attention.py);
``varlen_attn`` does not run on the CPU in torch 2.13 (``aten::_flash_attention_forward`` has
no CPU kernel), so the CUDA branch is only taken on CUDA tensors. On one H200 (torch 2.11+cu130,
transformers 5.23, bf16) the CUDA tests of that file passed (varlen_attn vs batched SDPA, one
varlen_attn call per block) and full-size bf16 towers were as far from an fp32 run with fast
attention as with SDPA (docs/speed.md). The kwargs and layouts above were read in the 5.23 and
5.25 sources of the three families (identical attention code).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .family import vision_tower_families

__all__ = [
    "ATTN_NAME",
    "FastVisionAttention",
    "enable_fast_vision_attention",
    "segment_attention",
    "segment_attention_forward",
    "varlen_available",
]

#: The name registered with ``transformers.AttentionInterface``: contains "flash" so the Qwen
#: vision attention passes ``cu_seqlens`` instead of splitting, and no digit (see module doc).
ATTN_NAME = "videoprune_flash_segments"

_NOTHING_TO_DO = ("molmo2",)


@functools.lru_cache(maxsize=1)
def _varlen_fn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch < 2.9
        return None
    return varlen_attn


@functools.lru_cache(maxsize=1)
def _varlen_params() -> frozenset[str]:
    """Keyword arguments this torch's ``varlen_attn`` takes (its signature changed across releases)."""
    try:
        return frozenset(inspect.signature(_varlen_fn()).parameters)
    except (TypeError, ValueError):
        return frozenset()


def varlen_available(device: torch.device | str | None = None) -> bool:
    """True when ``varlen_attn`` exists in this torch and ``device`` (default: CUDA) is a CUDA device."""
    dev = torch.device("cuda" if device is None else device)
    return dev.type == "cuda" and torch.cuda.is_available() and _varlen_fn() is not None


def _use_varlen(q: torch.Tensor, k: torch.Tensor, key_bias, dropout: float, is_causal: bool, scale, gqa) -> bool:
    if not (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and key_bias is None and dropout == 0.0
            and not is_causal and q.shape[-1] <= 256 and q.shape[-1] % 8 == 0 and k.shape[-1] == q.shape[-1]
            and _varlen_fn() is not None):
        return False
    params = _varlen_params()
    return (scale is None or "scale" in params) and (not gqa or "enable_gqa" in params)


def _lengths(cu: torch.Tensor) -> list[int]:
    return (cu[1:] - cu[:-1]).tolist()


def segment_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens_q: torch.Tensor,
                      cu_seqlens_k: torch.Tensor | None = None, *, scale: float | None = None,
                      key_bias: torch.Tensor | None = None, max_seqlen_q: int | None = None,
                      max_seqlen_k: int | None = None, dropout: float = 0.0, is_causal: bool = False,
                      prefer_varlen: bool = True) -> torch.Tensor:
    """Attention within segments of a packed sequence: ``(H, S_q, D)`` out of ``(H, S, D)`` inputs.

    Args:
        query, key, value: ``(H, S, D)`` (key/value may have fewer heads: grouped-query attention).
        cu_seqlens_q, cu_seqlens_k: ``(N+1,)`` segment boundaries (``cu_seqlens_k`` defaults to
            ``cu_seqlens_q``); query segment ``i`` attends to key segment ``i`` only. Empty
            segments are allowed.
        scale: softmax scale (default ``D ** -0.5``).
        key_bias: optional ``(S_k,)`` float added to the logits of every query against that key
            (STTS's soft key bias); differentiable.
        max_seqlen_q, max_seqlen_k: longest segments (used by ``varlen_attn``; computed if None).
        prefer_varlen: use ``varlen_attn`` when it applies (CUDA, fp16/bf16, no bias, no
            dropout, not causal); else one SDPA call per distinct ``(len_q, len_k)``.

    Exactness: the SDPA path stacks segments of equal length into the batch dimension, so each
    segment gets the same computation as its own SDPA call (equal up to kernel blocking).
    """
    cu_k = cu_seqlens_q if cu_seqlens_k is None else cu_seqlens_k
    gqa = key.shape[0] != query.shape[0]
    vscale = scale  # the default scale is left out: torch builds whose varlen_attn takes no `scale` still apply
    if vscale is not None and abs(float(vscale) - query.shape[-1] ** -0.5) <= 1e-12 * float(vscale):
        vscale = None
    if prefer_varlen and _use_varlen(query, key, key_bias, dropout, is_causal, vscale, gqa):
        varlen_attn = _varlen_fn()
        cu_q32 = cu_seqlens_q.to(device=query.device, dtype=torch.int32)
        cu_k32 = cu_k.to(device=query.device, dtype=torch.int32)
        mq = int(max_seqlen_q) if max_seqlen_q is not None else int((cu_q32[1:] - cu_q32[:-1]).max())
        mk = int(max_seqlen_k) if max_seqlen_k is not None else int((cu_k32[1:] - cu_k32[:-1]).max())
        q, k, v = (t.transpose(0, 1) for t in (query, key, value))  # (S, H, D) views, last dim contiguous
        if any(t.stride(-1) != 1 for t in (q, k, v)):
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        extra = {"scale": vscale} if vscale is not None else {}
        if gqa:
            extra["enable_gqa"] = True
        out = varlen_attn(q, k, v, cu_q32, cu_k32, mq, mk, **extra)
        return out.transpose(0, 1)
    return _batched_sdpa(query, key, value, cu_seqlens_q, cu_k, scale, key_bias, dropout, is_causal, gqa)


def _batched_sdpa(query, key, value, cu_q, cu_k, scale, key_bias, dropout, is_causal, gqa) -> torch.Tensor:
    lq, lk = _lengths(cu_q), _lengths(cu_k)
    if len(lq) != len(lk):
        raise ValueError(f"cu_seqlens_q has {len(lq)} segments but cu_seqlens_k has {len(lk)}")
    starts_q = [0]
    starts_k = [0]
    for a, b in zip(lq, lk):
        starts_q.append(starts_q[-1] + a)
        starts_k.append(starts_k[-1] + b)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (a, b) in enumerate(zip(lq, lk)):
        if a > 0:
            groups.setdefault((a, b), []).append(i)
    h, s_q, d = query.shape
    extra = {"enable_gqa": True} if gqa else {}
    if not groups:
        return query.new_zeros(h, s_q, value.shape[-1])
    device = query.device

    def rows(starts, length, segs):
        base = torch.tensor([starts[i] for i in segs], device=device, dtype=torch.long)
        return (base.unsqueeze(1) + torch.arange(length, device=device)).flatten()

    outs, perm = [], []
    for (a, b), segs in groups.items():
        n = len(segs)
        if len(groups) == 1 and n * a == s_q and n * b == key.shape[1]:  # one length covers all rows: views
            q = query.reshape(h, n, a, d)
            k = key.reshape(key.shape[0], n, b, -1)
            v = value.reshape(value.shape[0], n, b, -1)
            bias = None if key_bias is None else key_bias.reshape(n, 1, 1, b)
            idx_q = None
        else:
            idx_q, idx_k = rows(starts_q, a, segs), rows(starts_k, b, segs)
            q = query.index_select(1, idx_q).reshape(h, n, a, d)
            k = key.index_select(1, idx_k).reshape(key.shape[0], n, b, -1)
            v = value.index_select(1, idx_k).reshape(value.shape[0], n, b, -1)
            bias = None if key_bias is None else key_bias.index_select(0, idx_k).reshape(n, 1, 1, b)
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # (n, H, L, D)
        if bias is not None:
            bias = bias.to(q.dtype)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, is_causal=is_causal,
                                           scale=scale, **extra)
        outs.append(o.transpose(0, 1).reshape(h, n * a, -1))
        if idx_q is not None:
            perm.append(idx_q)
    if not perm:
        return outs[0]
    out = torch.cat(outs, dim=1)
    perm = torch.cat(perm)
    if perm.shape[0] != s_q:  # zero-length query segments contribute no rows; anything else is a bug
        raise ValueError(f"segments cover {perm.shape[0]} of {s_q} query rows")
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.shape[0], device=device)
    return out.index_select(1, inverse)


def segment_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, scaling: float | None = None,
                              dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """A ``transformers.AttentionInterface`` function over packed segments.

    Takes what the Qwen vision attention passes on its flash path (5.23 and 5.25): ``query``,
    ``key``, ``value`` as ``(1, H, S, D)``, ``attention_mask=None``, ``cu_seq_lens_q`` /
    ``cu_seq_lens_k`` (or ``cu_seqlens``), ``max_length_q`` / ``max_length_k``; returns
    ``((1, S, H, D), None)`` like transformers' flash functions. Segment boundaries are
    required: this is not a general attention implementation.
    """
    cu_q = kwargs.get("cu_seq_lens_q")
    if cu_q is None:
        cu_q = kwargs.get("cu_seqlens")
    if cu_q is None:
        raise ValueError(f"{ATTN_NAME} needs segment boundaries (cu_seq_lens_q or cu_seqlens); it is meant for the "
                         f"Qwen vision towers only, got a call from {type(module).__name__}")
    if attention_mask is not None:
        raise ValueError(f"{ATTN_NAME} takes no attention_mask (segments come from cu_seq_lens_q)")
    if query.dim() != 4 or query.shape[0] != 1:
        raise ValueError(f"{ATTN_NAME} expects packed (1, H, S, D) inputs, got {tuple(query.shape)}")
    cu_k = kwargs.get("cu_seq_lens_k")
    out = segment_attention(query[0], key[0], value[0], cu_q, cu_k, scale=scaling,
                            max_seqlen_q=kwargs.get("max_length_q"), max_seqlen_k=kwargs.get("max_length_k"),
                            dropout=float(dropout or 0.0), is_causal=bool(kwargs.get("is_causal", False)))
    return out.transpose(0, 1).unsqueeze(0), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, segment_attention_forward)


def _qwen_towers() -> dict[str, str]:
    """``tower class name -> family name`` of the Qwen vision towers, from the family records."""
    return vision_tower_families()


def _qwen_tower(model: torch.nn.Module) -> torch.nn.Module | None:
    if type(model).__name__ in _qwen_towers():
        return model
    for path in ("model.visual", "visual"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is not None and type(obj).__name__ in _qwen_towers():
            return obj
    return None


@dataclass
class FastVisionAttention:
    """What :func:`enable_fast_vision_attention` changed; ``remove()`` (or leaving a ``with``) undoes it.

    Attributes:
        model: the model passed in.
        family: its ``model_type`` (``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl``, ``molmo2``).
        applied: False when the family needed no change (Molmo2).
        previous: ``[(config, its previous _attn_implementation)]`` of the vision configs switched.
    """

    model: torch.nn.Module
    family: str
    applied: bool
    previous: list[tuple[Any, str | None]] = field(default_factory=list)
    _removed: bool = False

    def remove(self) -> None:
        """Restore each switched vision config's previous attention implementation (idempotent)."""
        if self._removed:
            return
        for cfg, prev in self.previous:
            cfg._attn_implementation = prev
        self._removed = True

    def __enter__(self) -> FastVisionAttention:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def enable_fast_vision_attention(model: torch.nn.Module) -> FastVisionAttention:
    """Run the vision tower's attention in one call per block (opt-in); returns a handle with ``remove()``.

    ``model``: a Qwen2-VL / Qwen2.5-VL / Qwen3-VL ``*ForConditionalGeneration``, its inner
    ``*Model``, or the vision tower itself (``model.model.visual``); or a Molmo2 model.

    * Qwen2-VL / Qwen2.5-VL / Qwen3-VL: sets ``_attn_implementation`` of the config that the
      vision attention modules read (``config.vision_config``, shared with
      ``model.model.visual.config``) to :data:`ATTN_NAME`. The language model's config is not
      touched, so its attention and masks are unchanged. Every vision block (windowed and
      full-attention blocks of Qwen2.5-VL alike) then makes one attention call: ``varlen_attn``
      on CUDA in fp16/bf16, one SDPA call per distinct segment length otherwise. videoprune's
      own encoder drivers (pre-encoder EVS on Qwen2-VL / Qwen2.5-VL / Qwen3-VL and STTS on
      Qwen2.5-VL, via :mod:`videoprune.models.qwen_vision`) call the same blocks, so they get one call too.
    * Molmo2: nothing to change, and nothing is changed (``handle.applied`` is False). Its ViT
      passes frames as the attention batch with no segments (one call per layer already), and
      videoprune's STTS path packs kept patches into rows attended with one block-diagonal
      mask per layer (one call as well).

    Raises:
        ValueError: any other family (LLaVA-OneVision included: its SigLIP tower is not switched).

    The output equals the previous implementation's up to floating-point rounding (checked
    against SDPA within 1e-5 in fp32 on the CPU); it stays opt-in all the same.
    """
    config = getattr(model, "config", None)
    family = getattr(config, "model_type", None)
    tower = _qwen_tower(model)
    if tower is None:
        if family in _NOTHING_TO_DO:
            return FastVisionAttention(model=model, family=family, applied=False)
        raise ValueError(f"enable_fast_vision_attention supports Qwen2-VL, Qwen2.5-VL, Qwen3-VL (and accepts Molmo2, "
                         f"which needs no change); got {type(model).__name__} (model_type {family!r})")
    _register()
    configs: dict[int, Any] = {}
    for blk in tower.blocks:
        configs.setdefault(id(blk.attn.config), blk.attn.config)
    text_cfg = getattr(getattr(model, "config", None), "text_config", None)
    if text_cfg is not None and id(text_cfg) in configs:
        raise RuntimeError("the vision attention shares its config with the language model; refusing to switch both")
    previous = [(cfg, cfg._attn_implementation) for cfg in configs.values()]
    for cfg, _ in previous:
        cfg._attn_implementation = ATTN_NAME
    fam = _qwen_towers()[type(tower).__name__]
    return FastVisionAttention(model=model, family=fam, applied=True, previous=previous)
