"""Architecture configs of named video VLM checkpoints, and random-weight models built from them.

The dicts (each family record's ``full_size``, gathered in :data:`ARCHITECTURES`) were
TRANSCRIBED BY HAND from the checkpoints' published ``config.json`` files (Hugging Face Hub), not downloaded; only the fields that decide compute and memory are kept:
widths (``hidden_size``, ``intermediate_size``), depths (``num_hidden_layers`` / ``depth``),
attention heads (``num_attention_heads``, ``num_key_value_heads``, ``head_dim``), the vision
tower's patch / merge / window geometry (``patch_size``, ``spatial_merge_size``,
``temporal_patch_size``, ``window_size``, ``fullatt_block_indexes``, deepstack taps), the M-RoPE
sections, the vocabulary size and the special token ids. Dropout, initialiser ranges, generation
defaults etc. are left at transformers' defaults: they change neither speed nor memory.
Published files of Qwen2-VL / Qwen2.5-VL are flat; here the text fields sit under
``text_config`` as transformers 5 stores them.

:func:`build_model` turns a named config (optionally shrunk by :func:`scale_config`) into a
randomly initialised ``*ForConditionalGeneration``; :func:`load_model` loads a user's checkpoint
(path or Hub id) with ``from_pretrained``, the documented way to benchmark real weights.
"""

from __future__ import annotations

import copy
from typing import Any

from ..models.registry import FAMILIES, family_for

__all__ = ["ARCHITECTURES", "scale_config", "build_model", "meta_model", "load_model", "resolve_model"]

#: ``name -> architecture dict`` of every family's full-size presets (``full_size`` of the records in
#: ``videoprune/models/<family>.py``), in registry order.
ARCHITECTURES: dict[str, dict[str, Any]] = {name: copy.deepcopy(dict(arch)) for f in FAMILIES
                                            for name, arch in f.full_size.items()}

# ids of special tokens are moved below this when a scaled config shrinks the vocabulary
_SCALED_VOCAB = 16384


def _remap_layers(indexes: list[int], depth: int, new_depth: int) -> list[int]:
    """Keep the relative positions of special blocks (full attention, deepstack taps) in a shorter tower."""
    out = sorted({min(new_depth - 1, max(0, round((i + 1) * new_depth / depth) - 1)) for i in indexes})
    return out


def scale_config(arch: dict[str, Any], scale: float) -> dict[str, Any]:
    """Shrink widths and depths by ``scale`` (in (0, 1]) for CPU runs; head dims and geometry are kept.

    Widths: heads scale (head dim fixed, so M-RoPE sections stay valid), ``hidden = heads·head_dim``,
    ``intermediate`` scales linearly; depths: ``max(1, round(depth·scale))`` (at least 2 for
    windowed Qwen2.5-VL towers so both block kinds run). Patch/merge/window geometry is untouched,
    so token counts equal the real model's. The vocabulary is capped at 16384 (the benchmark
    computes logits for one position only, so it does not change prefill cost) and special token
    ids are moved inside it.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")
    cfg = copy.deepcopy(arch)
    if scale == 1:
        return cfg
    t, v = cfg["text_config"], cfg["vision_config"]
    hd = t.get("head_dim")
    t["num_attention_heads"] = max(1, round(t["num_attention_heads"] * scale))
    kv = max(1, round(t["num_key_value_heads"] * scale))
    while t["num_attention_heads"] % kv:
        kv -= 1
    t["num_key_value_heads"] = kv
    head_dim = hd or t["hidden_size"] // arch["text_config"]["num_attention_heads"]
    t["hidden_size"] = t["num_attention_heads"] * head_dim if hd is None else max(64, round(t["hidden_size"] * scale / 64) * 64)
    if hd is None:
        t["head_dim"] = head_dim
    t["intermediate_size"] = max(64, round(t["intermediate_size"] * scale))
    t["num_hidden_layers"] = max(1, round(t["num_hidden_layers"] * scale))
    old_vocab = t["vocab_size"]
    t["vocab_size"] = min(old_vocab, _SCALED_VOCAB)
    if t["vocab_size"] < old_vocab:  # the real bos/eos ids fall outside; random weights need none
        t.update(bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if "adapter_config" in cfg:  # Molmo2: ViT + attention-pooling adapter, ids in the additional vocabulary
        return _scale_molmo2(cfg, arch, scale, old_vocab)
    for key in ("vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id",
                "image_token_index", "video_token_index"):
        if key in cfg and cfg[key] >= t["vocab_size"]:
            cfg[key] = t["vocab_size"] - (old_vocab - cfg[key]) % 64 - 1

    depth_key = "depth" if "depth" in v else "num_hidden_layers"
    heads_key = "num_heads" if "num_heads" in v else "num_attention_heads"
    # Qwen2-VL's tower is ``embed_dim`` wide; its ``hidden_size`` is the merger's output (the LLM width)
    width_key = "embed_dim" if "embed_dim" in v else "hidden_size"
    vdepth = v[depth_key]
    vhd = v[width_key] // v[heads_key]
    v[heads_key] = max(1, round(v[heads_key] * scale))
    v[width_key] = v[heads_key] * vhd
    if "intermediate_size" in v:
        v["intermediate_size"] = max(32, round(v["intermediate_size"] * scale))
    new_depth = max(2 if "fullatt_block_indexes" in v else 1, round(vdepth * scale))
    v[depth_key] = new_depth
    if "fullatt_block_indexes" in v:
        v["fullatt_block_indexes"] = _remap_layers(v["fullatt_block_indexes"], vdepth, new_depth)
        if len(v["fullatt_block_indexes"]) == new_depth:  # keep at least one windowed block
            v["fullatt_block_indexes"] = v["fullatt_block_indexes"][-1:]
    if "deepstack_visual_indexes" in v:
        v["deepstack_visual_indexes"] = _remap_layers(v["deepstack_visual_indexes"], vdepth, new_depth)
    if "out_hidden_size" in v:
        v["out_hidden_size"] = t["hidden_size"]
    if width_key == "embed_dim":
        v["hidden_size"] = t["hidden_size"]
    return cfg


def _scale_molmo2(cfg: dict[str, Any], arch: dict[str, Any], scale: float, old_vocab: int) -> dict[str, Any]:
    """The Molmo2 part of :func:`scale_config` (text widths/depth already scaled).

    Special ids live in the additional vocabulary above ``vocab_size`` and keep their offset
    there. The ViT keeps its head dim and 378 px / 14 px geometry (81 tokens per frame); its
    depth scales, the two feature taps keep their relative depths (the deepest stays the last
    block, as in the trimmed real tower) and the adapter follows the scaled widths.
    """
    t, v, a = cfg["text_config"], cfg["vision_config"], cfg["adapter_config"]
    for key in ("image_start_token_id", "image_end_token_id", "image_patch_id", "low_res_image_start_token_id",
                "frame_start_token_id", "frame_end_token_id"):
        cfg[key] = t["vocab_size"] + cfg[key] - old_vocab
    depth = v["num_hidden_layers"]
    v["num_attention_heads"] = v["num_key_value_heads"] = max(1, round(v["num_attention_heads"] * scale))
    v["hidden_size"] = v["num_attention_heads"] * v["head_dim"]
    v["intermediate_size"] = max(32, round(v["intermediate_size"] * scale))
    new_depth = max(2, round(depth * scale))
    v["num_hidden_layers"] = new_depth
    taps = []
    for i in a["vision_feature_layer"]:
        j = min(new_depth - 1, max(0, round((i + 1) * new_depth / depth) - 1))
        while j in taps and j > 0:  # two taps stay two layers
            j -= 1
        taps.append(j)
    a.update(vision_feature_layer=taps, hidden_size=v["hidden_size"], num_attention_heads=v["num_attention_heads"],
             num_key_value_heads=v["num_attention_heads"], head_dim=v["head_dim"],
             intermediate_size=max(64, round(a["intermediate_size"] * scale)), text_hidden_size=t["hidden_size"])
    return cfg


def resolve_model(name: str) -> dict[str, Any] | None:
    """The embedded architecture dict for ``name`` (case-insensitive), or None for a path / Hub id."""
    return copy.deepcopy(ARCHITECTURES.get(name.lower())) if isinstance(name, str) else None


def _config_class(model_type: str):
    """``(config class, model class)`` of ``model_type`` from its family record; one-line ValueError if unknown."""
    return family_for(model_type).transformers_classes()


def build_model(arch: dict[str, Any], dtype=None, device: str = "cpu", seed: int = 0):
    """A randomly initialised model of architecture ``arch`` (a dict as in :data:`ARCHITECTURES`), eval mode.

    On the CPU it is built in float32 and then cast (the weights the CPU tests and tables use).
    On another device the parameters are created there, directly in ``dtype``: an 8B model is
    built on a GPU in seconds instead of a minute of CPU initialisation and a 32 GB copy.
    """
    import torch

    arch = copy.deepcopy(arch)
    model_type = arch.pop("model_type")
    config_cls, model_cls = _config_class(model_type)
    config = config_cls(**arch)
    torch.manual_seed(seed)
    if str(device) != "cpu":
        previous = torch.get_default_dtype()
        try:
            if dtype is not None:
                torch.set_default_dtype(dtype)
            with torch.device(device):
                model = model_cls(config)
        finally:
            torch.set_default_dtype(previous)
        return (model.to(dtype) if dtype is not None else model).eval()
    model = model_cls(config)
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval()


def meta_model(arch: dict[str, Any]):
    """The model of architecture ``arch`` on the meta device: its parameter shapes and config, no memory.

    What :func:`build_model` would build, for counting parameters before committing the memory
    (an 8B model is built in about 0.1 s this way).
    """
    import torch

    arch = copy.deepcopy(arch)
    config_cls, model_cls = _config_class(arch.pop("model_type"))
    with torch.device("meta"):
        return model_cls(config_cls(**arch))


def load_model(path_or_id: str, dtype=None, device: str = "cpu"):
    """Load a user's checkpoint with ``AutoModelForImageTextToText.from_pretrained``.

    ``path_or_id``: a local path, a Hub id or ``default`` / ``default-uptrained`` (the embedded
    models), resolved by :func:`videoprune.hub.resolve` (a missing path or an unreachable,
    uncached Hub id fails at once).
    """
    from transformers import AutoModelForImageTextToText

    from ..hub import resolve

    model = AutoModelForImageTextToText.from_pretrained(resolve(path_or_id), dtype=dtype)
    return model.to(device).eval()
