"""Pure-tensor pruning core: EVS selection, KeepPlan and position bookkeeping (no transformers)."""

from .evs import (
    embedding_dissimilarity,
    normalize_grids,
    pixel_dissimilarity,
    pixel_retention_mask,
    retained_count,
    retention_mask,
    select_by_rate,
    select_by_threshold,
    threshold_mask,
)
from .plan import KeepPlan, VideoKeepStats, build_plan
from .positions import prune_positions, rope_deltas

__all__ = [
    "embedding_dissimilarity",
    "normalize_grids",
    "pixel_dissimilarity",
    "pixel_retention_mask",
    "retained_count",
    "retention_mask",
    "select_by_rate",
    "select_by_threshold",
    "threshold_mask",
    "KeepPlan",
    "VideoKeepStats",
    "build_plan",
    "prune_positions",
    "rope_deltas",
]
