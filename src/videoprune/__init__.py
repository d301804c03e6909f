"""videoprune: prune temporally redundant video tokens to make video VLMs faster."""

from .core import (
    KeepPlan,
    build_plan,
    pixel_retention_mask,
    prune_positions,
    retained_count,
    retention_mask,
    rope_deltas,
    threshold_mask,
)

from .config import EVSConfig
from .patch import PruneHandle, PruneStats, disabled, patch
from .stts.config import STTSConfig

__version__ = "0.1.0"

__all__ = [
    "EVSConfig",
    "PruneHandle",
    "PruneStats",
    "STTSConfig",
    "disabled",
    "patch",
    "KeepPlan",
    "build_plan",
    "pixel_retention_mask",
    "prune_positions",
    "retained_count",
    "retention_mask",
    "rope_deltas",
    "threshold_mask",
    "__version__",
]
