"""STTS (methods.md §2), the model-independent part: scorer, auxiliary loss, key bias, selection, packing.

Pure torch; nothing here imports transformers. Model adapters wire these pieces into a ViT.
"""

from .bias import BIAS_FLOOR, key_bias, key_bias_attn_mask, pooled_key_bias, upsample_to_patches
from .config import STTS_METHODS, STTSConfig
from .family import STTSFamily
from .loss import temporal_aux_loss, temporal_target
from .packing import (
    PackedLayout,
    build_layout,
    ffd_pack,
    kept_cu_seqlens,
    pack,
    pack_kept,
    packed_attention,
    scatter_back,
    unpack_kept,
)
from .scorer import STTSScorer, cosine_to_previous, grid_to_windows, window_mean, window_view, windows_to_grid
from .select import (
    STTSSelection,
    drop_count,
    method_scores,
    prev_frame_scores,
    random_scores,
    redundant_to_reference,
    ref_frame_scores,
    select_tokens,
)

__all__ = [
    "BIAS_FLOOR",
    "STTS_METHODS",
    "PackedLayout",
    "STTSConfig",
    "STTSFamily",
    "STTSScorer",
    "STTSSelection",
    "build_layout",
    "cosine_to_previous",
    "drop_count",
    "ffd_pack",
    "grid_to_windows",
    "kept_cu_seqlens",
    "key_bias",
    "key_bias_attn_mask",
    "method_scores",
    "pack",
    "pack_kept",
    "packed_attention",
    "pooled_key_bias",
    "prev_frame_scores",
    "random_scores",
    "redundant_to_reference",
    "ref_frame_scores",
    "scatter_back",
    "select_tokens",
    "temporal_aux_loss",
    "temporal_target",
    "unpack_kept",
    "upsample_to_patches",
    "window_mean",
    "window_view",
    "windows_to_grid",
]
