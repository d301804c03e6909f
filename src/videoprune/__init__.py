"""videoprune: prune temporally redundant video tokens to make video VLMs faster.

The public names below load on first use (PEP 562), so ``import videoprune`` (and with it
``videoprune --help``) does not import torch; ``videoprune.patch`` etc. behave as plain imports.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# public name -> the module that defines it
_WHERE = {
    "KeepPlan": ".core",
    "build_plan": ".core",
    "pixel_retention_mask": ".core",
    "prune_positions": ".core",
    "retained_count": ".core",
    "retention_mask": ".core",
    "rope_deltas": ".core",
    "threshold_mask": ".core",
    "EVSConfig": ".config",
    "PruneHandle": ".llm",
    "PruneStats": ".llm",
    "disabled": ".llm",
    "pruned_loss": ".llm",
    "patch": ".patch",
    "STTSConfig": ".stts.config",
}

__all__ = [
    "EVSConfig",
    "PruneHandle",
    "PruneStats",
    "STTSConfig",
    "disabled",
    "patch",
    "pruned_loss",
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


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps ``videoprune.patch`` the function once the submodule of the same name is imported.

    Importing a submodule sets it as an attribute of its package; eagerly, ``from .patch import
    patch`` ran afterwards and won. Lazily, the submodule may load first (any internal
    ``from ..patch import ...``), so the attribute is a property that ignores that one assignment.
    """

    @property
    def patch(self):
        value = self.__dict__.get("patch")
        return value if value is not None else importlib.import_module(".patch", __name__).patch

    @patch.setter
    def patch(self, value) -> None:
        if not (isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.patch"):
            self.__dict__["patch"] = value  # monkeypatching still works


sys.modules[__name__].__class__ = _Package
