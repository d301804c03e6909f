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

__version__ = "0.1.0"

__all__ = [
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
