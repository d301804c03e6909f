"""Pruning-aware subclasses of vLLM's Qwen2.5-VL and Qwen2-VL (vLLM 0.32), and their multimodal processors.

Each class keeps vLLM's constructor (``__init__(self, *, vllm_config, prefix="")``) and, without a
``videoprune`` block, changes nothing: every override calls vLLM's own method. With a block it
reuses vLLM's own EVS plumbing, which already carries pruned video through the engine:

* prompt placeholders: the processors (:class:`VideopruneQwen2_5_VLProcessor`,
  :class:`VideopruneQwen2VLProcessor`) size each video's placeholder run with
  :func:`videoprune.vllm.config.kept_tokens` (shapes and rate only), in ``_get_prompt_updates``,
  the hook where vLLM's EVS sizes it;
* positions: each video's kept embeddings carry their original M-RoPE ids in 4 extra channels
  (``compute_mrope_for_media`` gathered by the keep mask), and the model runner's
  ``recompute_mrope_positions`` writes them into the request's positions, so kept tokens keep
  their unpruned ids and decoding continues after the unpruned sequence;
* selection: :mod:`videoprune.core` (EVS on embeddings or pixels) and the STTS scorer, the code the
  HF patch runs, so both engines keep the same tokens.

The shared part is :class:`PruningMixin`. vLLM's Qwen2.5-VL class already implements
``SupportsMultiModalPruning``; its Qwen2-VL class does not, so :class:`VideopruneQwen2VL` adds it
when a block is configured: vLLM's own ``recompute_mrope_positions`` and image-position
post-processing (borrowed from the Qwen2.5-VL class: the same token ids and position layout), an
``embed_multimodal`` that appends the position channels, and no encoder CUDA graphs (they would
bypass that post-processing, as vLLM's Qwen2.5-VL turns them off under EVS).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import torch
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.model_executor.models.qwen2_vl import (
    Qwen2VLDummyInputsBuilder,
    Qwen2VLForConditionalGeneration,
    Qwen2VLMultiModalProcessor,
    Qwen2VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement
from vllm.multimodal.video_prune.evs import compute_mrope_for_media

from ..core.evs import pixel_retention_mask, retention_mask
from . import encoder as E
from .config import BLOCK, PluginConfig, kept_tokens, parse_block

__all__ = ["PruningMixin", "VideopruneQwen2VL", "VideopruneQwen2VLProcessor", "VideopruneQwen2_5_VL",
           "VideopruneQwen2_5_VLProcessor", "plugin_config", "observers"]

#: callables ``fn(event: dict)`` told about every pruned video (method, grid, keep mask, encoder
#: rows); for tests and benchmarks in the engine's process. Empty in normal serving.
observers: list = []


def plugin_config(hf_config) -> PluginConfig | None:
    """The validated ``videoprune`` block of ``hf_config``, or None when it has none."""
    block = getattr(hf_config, BLOCK, None)
    if block is None:
        return None
    return parse_block(block, hf_config.model_type, getattr(hf_config, "vision_config", None))


class KeptPlaceholdersMixin:
    """A Qwen-VL multimodal processor whose video placeholder runs have the kept count when a block is set."""

    def _videoprune_block(self) -> PluginConfig | None:
        """The block, parsed once per processor: parsing an stts block opens the scorer file and checks it.

        The engine start already validated it (:mod:`videoprune.vllm.hooks`), so a request never re-reads the file.
        """
        if "_videoprune_plugin" not in self.__dict__:
            self.__dict__["_videoprune_plugin"] = plugin_config(self.info.get_hf_config())
        return self.__dict__["_videoprune_plugin"]

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        plugin = self._videoprune_block()
        if plugin is None:
            return super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        hf_processor = self.info.get_hf_processor(**hf_processor_mm_kwargs)
        merge = self.info.get_image_processor(**hf_processor_mm_kwargs).merge_size
        vocab = self.info.get_tokenizer().get_vocab()
        token = {"image": vocab[hf_processor.image_token], "video": vocab[hf_processor.video_token]}

        def replacement(item_idx: int, modality: str):
            grid = [int(v) for v in out_mm_kwargs[modality][item_idx][f"{modality}_grid_thw"].data]
            n = kept_tokens(plugin, grid, merge) if modality == "video" else grid[0] * grid[1] * grid[2] // merge**2
            return [token[modality]] * n

        return [PromptReplacement(modality=m, target=[token[m]], replacement=partial(replacement, modality=m))
                for m in ("image", "video")]


class VideopruneQwen2_5_VLProcessor(KeptPlaceholdersMixin, Qwen2_5_VLMultiModalProcessor):
    """vLLM's Qwen2.5-VL processor; with a block, each video's placeholder run has the kept count."""


class VideopruneQwen2VLProcessor(KeptPlaceholdersMixin, Qwen2VLMultiModalProcessor):
    """vLLM's Qwen2-VL processor; with a block, each video's placeholder run has the kept count."""


class PruningMixin:
    """Video pruning by the ``videoprune`` block, for a vLLM Qwen-VL model class (put before it in the bases).

    Holds what both families share: the block (``self.videoprune``, None without one), the encoder
    path of ``evs-pre`` and ``stts``, and the LLM-side keep mask with position channels
    (``_postprocess_video_embeds_evs``, the hook vLLM's EVS uses).
    """

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.videoprune = plugin_config(vllm_config.model_config.hf_config)
        self._videoprune_keep: list[torch.Tensor] = []
        self.videoprune_scorer = None
        if self.videoprune is None:
            return
        _check_engine(self, vllm_config)
        # images get their position channels too: the runner's recompute reads them from every item
        self.is_multimodal_pruning_enabled = True
        # per instance: only a model with a block tells the runner to recompute positions
        self.supports_multimodal_pruning = True
        if self.videoprune.method == "stts":
            # kept out of the module tree: vLLM's loader would look for its weights in the checkpoint
            self.__dict__["videoprune_scorer"] = _load_scorer(self.videoprune.config, self.visual, self.config)

    # ---- encoder -------------------------------------------------------------------------------------
    def _process_video_input(self, video_input):
        if self.videoprune is None or self.videoprune.method == "evs":
            return super()._process_video_input(video_input)
        if video_input["type"] != "pixel_values_videos":
            raise ValueError(f"{BLOCK}.method: {self.videoprune.method!r} prunes pixels; precomputed "
                             "video_embeds cannot be pruned by it (use method 'evs')")
        grid = [[int(v) for v in row] for row in video_input["video_grid_thw"].tolist()]
        pixels = E.normalized_pixels(self.visual, video_input["pixel_values_videos"])
        if self.videoprune.method == "evs-pre":
            keeps = [self._pre_encoder_keep(pixels, grid)]
            feats = E.encode_kept(self.visual, pixels, grid, keeps[0])
            rows = int(keeps[0].sum()) * E.merge_unit(self.visual)
        else:
            from .stts import encode_stts

            feats, keeps, rows = encode_stts(self.visual, self.videoprune_scorer, self.videoprune.config, pixels, grid)
        keep = torch.cat(keeps)
        self._notify(grid, keep, rows)
        sizes = [t * h * w // E.merge_unit(self.visual) for t, h, w in grid]
        self._videoprune_keep = list(keep.split(sizes))
        return feats.split([int(k.sum()) for k in self._videoprune_keep])

    def _pre_encoder_keep(self, pixels: torch.Tensor, grid: list[list[int]]) -> torch.Tensor:
        """Pixel-criterion EVS over merge units, before the tower (core.evs, as the HF patch)."""
        return pixel_retention_mask(pixels, grid, self.visual.spatial_merge_size, rate=self.videoprune.rate)

    def _notify(self, grid, keep: torch.Tensor, rows: int) -> None:
        for fn in observers:
            fn({"method": self.videoprune.method, "grid_thw": grid, "keep": keep.cpu(), "encoder_rows": rows})

    # ---- LLM side ---------------------------------------------------------------------------------
    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list) -> tuple[torch.Tensor, int]:
        """vLLM's; with a block, prompt positions sized by each item's placeholder run (the kept count for a video).

        vLLM's own assumes every item's full grid of tokens: after a pruned video the next item's
        offset lies before where it thinks the video ends, and a prompt with two videos (or a video
        then an image) fails. These positions are provisional: the runner's
        ``recompute_mrope_positions`` overwrites them from the embeddings' position channels.
        """
        if self.videoprune is None:
            return super().get_mrope_input_positions(input_tokens, mm_features)
        return _placeholder_positions(len(input_tokens), mm_features, int(self.config.vision_config.spatial_merge_size))

    def _postprocess_video_embeds_evs(self, video_embeds_split, video_input):
        if self.videoprune is None:
            return super()._postprocess_video_embeds_evs(video_embeds_split, video_input)
        grid = video_input["video_grid_thw"].tolist()
        seconds = video_input.get("second_per_grid_ts")
        # seconds per grid stay floats: vLLM's own EVS casts them to int first, which puts every frame at
        # t = 0 for 0.5 s per grid (vLLM's unpruned ids multiply first and truncate after, as here)
        seconds = [1.0] * len(grid) if seconds is None else [float(s) for s in seconds.tolist()]
        # Qwen2-VL's config has none: vLLM's get_mrope_input_positions then uses 1.0, and so do we
        tps = getattr(self.config.vision_config, "tokens_per_second", 1.0)
        merge = self.visual.spatial_merge_size
        out = []
        for i, (emb, size) in enumerate(zip(video_embeds_split, grid)):
            if self.videoprune.method == "evs":
                keep = retention_mask(emb, size, merge, self.videoprune.rate)
                self._notify([size], keep, 0)
                emb = emb[keep]
            else:
                keep = self._videoprune_keep[i].to(emb.device)
            pos = compute_mrope_for_media(size, merge, tokens_per_second=tps, video_second_per_grid=seconds[i])
            out.append(torch.cat([emb, pos.to(emb.device)[keep]], dim=1))
        return tuple(out)


@MULTIMODAL_REGISTRY.register_processor(VideopruneQwen2_5_VLProcessor, info=Qwen2_5_VLProcessingInfo,
                                        dummy_inputs=Qwen2_5_VLDummyInputsBuilder)
class VideopruneQwen2_5_VL(PruningMixin, Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2.5-VL, pruning video by the ``videoprune`` block of its config (none: unchanged)."""


@MULTIMODAL_REGISTRY.register_processor(VideopruneQwen2VLProcessor, info=Qwen2VLProcessingInfo,
                                        dummy_inputs=Qwen2VLDummyInputsBuilder)
class VideopruneQwen2VL(PruningMixin, Qwen2VLForConditionalGeneration):
    """vLLM's Qwen2-VL, pruning video by the ``videoprune`` block of its config (none: unchanged).

    vLLM's Qwen2-VL has no multimodal pruning; with a block this class adds it (see the module
    docstring). Methods: ``evs`` and ``evs-pre`` (STTS has no Qwen2-VL integration; the block
    refuses it at engine start).
    """

    # vLLM's own (Qwen2.5-VL's): they read only image/video/vision-start token ids, the merge size and
    # the image grid, which Qwen2-VL shares; the class does not claim pruning (vLLM's video_pruning_rate
    # stays as unsupported as on vLLM's Qwen2-VL), an instance with a block does (PruningMixin.__init__)
    recompute_mrope_positions = Qwen2_5_VLForConditionalGeneration.recompute_mrope_positions
    _postprocess_image_embeds_evs = Qwen2_5_VLForConditionalGeneration._postprocess_image_embeds_evs

    def embed_multimodal(self, **kwargs: object):
        """vLLM's; with a block, every item's embeddings get their position channels and videos are pruned."""
        if self.videoprune is None:
            return super().embed_multimodal(**kwargs)
        out: tuple[torch.Tensor, ...] = ()
        for modality, item in self._parse_and_validate_multimodal_inputs(**kwargs).items():
            if modality == "images":
                out += tuple(self._postprocess_image_embeds_evs(self._process_image_input(item), item))
            else:
                out += tuple(self._postprocess_video_embeds_evs(self._process_video_input(item), item))
        return out

    def get_encoder_cudagraph_config(self):
        """vLLM's; with a block no modality runs in an encoder CUDA graph (it would skip the position channels)."""
        config = super().get_encoder_cudagraph_config()
        return config if self.videoprune is None else dataclasses.replace(config, modalities=[])


def _placeholder_positions(n_tokens: int, mm_features: list, merge: int) -> tuple[torch.Tensor, int]:
    """``(3, n_tokens)`` M-RoPE ids and their delta: text counts on, each item takes the first ``length`` ids of its grid."""
    parts, start, next_id = [], 0, 0
    for feat in sorted(mm_features, key=lambda f: f.mm_position.offset):
        text = feat.mm_position.offset - start
        parts.append(torch.arange(text).expand(3, text) + next_id)
        next_id += text
        t, h, w = (int(v) for v in feat.data[f"{feat.modality}_grid_thw"].data.tolist())
        n = int(feat.mm_position.length)
        grid = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h // merge), torch.arange(w // merge),
                                          indexing="ij")).reshape(3, -1)[:, :n] + next_id
        parts.append(grid)
        next_id = int(grid.max()) + 1 if n else next_id
        start = feat.mm_position.offset + n
    parts.append(torch.arange(n_tokens - start).expand(3, n_tokens - start) + next_id)
    positions = torch.cat(parts, dim=1)
    return positions, int(positions.max()) + 1 - n_tokens


def _check_engine(model, vllm_config) -> None:
    """Refuse engine settings the block cannot honour (never ignore the block silently)."""
    mm = vllm_config.model_config.multimodal_config
    if mm is not None and mm.is_multimodal_pruning_enabled():
        raise ValueError(f"{BLOCK}: video_pruning_rate is set too; use one of the two (the block's method 'evs' "
                         "is the same selection)")
    if model.videoprune.method != "evs" and model.use_data_parallel:
        raise ValueError(f"{BLOCK}.method: {model.videoprune.method!r} does not support mm_encoder_tp_mode='data' yet")


def _load_scorer(cfg, visual, hf_config) -> torch.nn.Module:
    """The STTS scorer of ``cfg.scorer_path``, fingerprint checked against the checkpoint, float32 on the tower's device."""
    from ..stts.scorer import STTSScorer
    from ..stts.weights import load_scorer_state
    from ..models.stts_qwen2_5_vl import scorer_fingerprint

    pool = int(visual.spatial_merge_size)
    scorer = STTSScorer(int(visual.hidden_size), pool, cfg.mlp_hidden, cfg.attn_dim)
    arch = {"width": scorer.width, "pool": scorer.pool, "mlp_hidden": cfg.mlp_hidden, "attn_dim": cfg.attn_dim}
    fields = scorer_fingerprint(hf_config.vision_config, cfg.prune_at, pool)
    state = load_scorer_state(cfg.scorer_path, fields, arch)
    scorer.load_state_dict(state)
    return scorer.float().to(visual.device).eval()
