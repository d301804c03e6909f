"""The ``videoprune`` block of a vLLM model config: parsing, validation and placeholder counts.

A model is configured by one block in ``hf_overrides`` (or the checkpoint's ``config.json``)::

    {"videoprune": {"method": "evs" | "evs-pre" | "stts", "rate": 0.75, "scorer_path": "..."}}

This module imports no vLLM (it runs in any environment), so the checks here are the same in the
engine's front end (at engine start), in each worker and in the tests. Every error is one line
that names the field (``videoprune.method``, ``videoprune.rate``, ...).

Placeholder counts: vLLM sizes a prompt's video placeholders from the grid and the rate before any
features exist, so every method served here keeps a count computable from shapes and rate
(:func:`kept_tokens`); threshold mode, whose count depends on the content, is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..core.evs import retained_count
from ..methods import get_method, method_names
from ..models.registry import FAMILIES as _REGISTERED
from ..stts.select import drop_count

__all__ = ["BLOCK", "FAMILIES", "SERVED", "TESTED_VLLM", "PluginConfig", "check_vllm_version", "kept_tokens", "parse_block"]

#: the key of the block in hf_overrides / config.json
BLOCK = "videoprune"
#: vLLM releases the plug-in was tested on (major.minor); others are refused unless allowed
TESTED_VLLM = ("0.32",)
#: the vLLM (= transformers) classes the plug-in replaces with a pruning-aware subclass (Qwen3-VL: see
#: videoprune.vllm's module docstring)
SERVED: tuple[str, ...] = ("Qwen2_5_VLForConditionalGeneration", "Qwen2VLForConditionalGeneration")
#: ``model_type -> methods`` the plug-in serves: the table's vLLM methods that the family has on the HF side
#: (``Method.families()``; Qwen2-VL has no STTS integration, so no stts there); model_types from the family records
FAMILIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {t: tuple(m for m in method_names("vllm") if t in get_method(m).families())
     for f in _REGISTERED if f.classes[1] in SERVED for t in f.model_types})
_FIELDS = ("method", "rate", "scorer_path")
_THRESHOLD_WHY = ("threshold mode is not available in vLLM: vLLM sizes a prompt's video placeholders from the "
                  "grid and the rate before any features exist, and a threshold's token count depends on the "
                  "video's content; give videoprune.rate instead")


@dataclass(frozen=True)
class PluginConfig:
    """A validated block: the method name, its rate, and the patch config it maps to.

    Attributes:
        method: ``"evs"``, ``"evs-pre"`` or ``"stts"``.
        rate: fraction of each video's tokens dropped, in [0, 1).
        config: the :class:`~videoprune.EVSConfig` or :class:`~videoprune.stts.STTSConfig` that
            :func:`videoprune.patch` takes for the same method (so both engines prune alike).
    """

    method: str
    rate: float
    config: Any


def _field_error(name: str, msg: str) -> ValueError:
    return ValueError(f"{BLOCK}.{name}: {msg}")


def check_vllm_version(version: str, allow_untested: bool = False) -> None:
    """ValueError naming the version when vLLM ``version`` is outside :data:`TESTED_VLLM`."""
    minor = ".".join(str(version).split(".")[:2])
    if minor not in TESTED_VLLM and not allow_untested:
        raise ValueError(f"vllm version {version} is outside the range the videoprune plug-in was tested on "
                         f"({', '.join(v + '.x' for v in TESTED_VLLM)}); set VIDEOPRUNE_VLLM_ALLOW_UNTESTED=1 "
                         "to try it anyway")


def parse_block(block: Any, model_type: str, vision_config: Any = None) -> PluginConfig:
    """Validate a ``videoprune`` block for a model of ``model_type``; ValueError naming the field.

    Args:
        block: the block (a mapping, or its JSON text as ``vllm serve`` may pass it).
        model_type: ``hf_config.model_type`` of the served model.
        vision_config: ``hf_config.vision_config``; needed to check an STTS scorer against it.
    """
    if isinstance(block, str):
        try:
            block = json.loads(block)
        except json.JSONDecodeError as e:
            raise ValueError(f"{BLOCK}: not valid JSON ({e.msg})") from e
    if not isinstance(block, Mapping):
        raise ValueError(f"{BLOCK}: must be a mapping like {{\"method\": \"evs\", \"rate\": 0.75}}, got "
                         f"{type(block).__name__}")
    if "threshold" in block:
        raise _field_error("threshold", _THRESHOLD_WHY)
    unknown = sorted(set(block) - set(_FIELDS))
    if unknown:
        raise _field_error(unknown[0], f"unknown field; the block takes {', '.join(_FIELDS)}")
    if "method" not in block:
        raise _field_error("method", f"required; one of {', '.join(_methods())}")
    method = _check_method(block["method"], model_type)
    rate = _check_rate(block.get("rate"))
    scorer = block.get("scorer_path")
    if method != "stts":
        if scorer is not None:
            raise _field_error("scorer_path", f"only method 'stts' takes a scorer, not {method!r}")
        return PluginConfig(method, rate, get_method(method, "vllm").config(rate))
    return PluginConfig(method, rate, _stts_config(rate, scorer, vision_config))


def _methods() -> tuple[str, ...]:
    return tuple(sorted({m for ms in FAMILIES.values() for m in ms}))


def _check_method(method: Any, model_type: str) -> str:
    if not isinstance(method, str) or method not in _methods():
        raise _field_error("method", f"unknown method {method!r}; the vLLM plug-in serves {', '.join(_methods())}")
    get_method(method, "vllm")  # the shared table must offer it too
    if model_type not in FAMILIES:
        raise _field_error("method", f"model_type {model_type!r} is not covered by the videoprune vLLM plug-in; "
                                     f"it covers {', '.join(sorted(FAMILIES))}")
    if method not in FAMILIES[model_type]:
        raise _field_error("method", f"{method!r} is not available for {model_type} in vLLM; "
                                     f"it offers {', '.join(FAMILIES[model_type])}")
    return method


def _check_rate(rate: Any) -> float:
    if rate is None:
        raise _field_error("rate", "required: the fraction of video tokens dropped, in [0, 1)")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
        raise _field_error("rate", f"must be a number in [0, 1), got {rate!r}")
    return float(rate)


def _scorer_metadata(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(fingerprint fields, scorer arch)`` stored in a scorer file by ``handle.save_scorer``."""
    from safetensors import safe_open

    from ..stts import weights as W
    from ..validate import check_regular_file

    try:
        path = check_regular_file(path, "scorer file")
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except (ValueError, OSError, RuntimeError) as e:
        raise _field_error("scorer_path", " ".join(str(e).split())) from e
    except Exception as e:  # safetensors' own error type
        raise _field_error("scorer_path", f"scorer file is corrupt: {path} ({type(e).__name__})") from e
    if W.FINGERPRINT_KEY not in meta:
        raise _field_error("scorer_path", f"{path} is not a videoprune STTS scorer file (no fingerprint)")
    return json.loads(meta.get(W._FIELDS_KEY, "{}")), json.loads(meta.get(W._ARCH_KEY, "{}"))


def _stts_config(rate: float, scorer: Any, vision_config: Any):
    """The STTSConfig for a scorer file: prune_at and the scorer's shape come from the file, checked against the model."""
    if not isinstance(scorer, str) or not scorer:
        raise _field_error("scorer_path", "required for method 'stts': a scorer file saved by handle.save_scorer")
    fields, arch = _scorer_metadata(scorer)
    if vision_config is not None:
        pool = int(vision_config.spatial_merge_size)
        prune_at = fields.get("prune_at")
        if not isinstance(prune_at, int):
            raise _field_error("scorer_path", f"{scorer} records no prune_at")
        from ..models.stts_qwen2_5_vl import scorer_fingerprint

        want = scorer_fingerprint(vision_config, prune_at, pool)
        if fields != want:
            diff = ", ".join(f"{k}: scorer {fields.get(k)!r} vs model {want.get(k)!r}"
                             for k in sorted(set(fields) | set(want)) if fields.get(k) != want.get(k))
            raise _field_error("scorer_path", f"{scorer} does not match this checkpoint ({diff})")
    return get_method("stts", "vllm").config(rate, prune_at=int(fields.get("prune_at", 0)),
                                             mlp_hidden=int(arch["mlp_hidden"]), attn_dim=int(arch["attn_dim"]),
                                             pool=arch.get("pool"), scorer_path=scorer)


def kept_tokens(plugin: PluginConfig, grid_thw: tuple[int, int, int], spatial_merge_size: int) -> int:
    """Video tokens a prompt keeps for one video of pre-merge grid ``(T, H, W)``: shapes and rate only."""
    t, h, w = (int(v) for v in grid_thw)
    per_frame = (h // spatial_merge_size) * (w // spatial_merge_size)
    if plugin.method == "stts":
        return per_frame * t - drop_count(per_frame, t, plugin.rate)
    return retained_count(per_frame, t, plugin.rate)
