"""The one registry of model families: ``model_type -> Family`` (see :class:`~videoprune.models.family.Family`).

Adding a family is one new ``models/<family>.py`` exporting ``FAMILY``, its name in the static
import below and one line in :data:`FAMILY_MODULES`; every other module (patching, STTS,
preprocessing, prompts, ``bench``, ``train``) finds the family here and names none.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

# static imports (not importlib): the import-graph test sees every family module the registry loads
from . import llava_onevision, molmo2, qwen2_5_vl, qwen2_vl, qwen3_vl, qwen3_vl_moe
from .family import Family, vision_tower_families

__all__ = ["FAMILIES", "FAMILIES_BY_TYPE", "DEFAULT_FAMILY", "FAMILY_MODULES", "family_for", "model_types_where",
           "vision_towers"]

#: The family modules, one line each, in the order listings print them.
FAMILY_MODULES = (
    qwen2_vl,
    qwen2_5_vl,
    qwen3_vl,
    qwen3_vl_moe,
    llava_onevision,
    molmo2,
)

#: The family modules' short names (``"qwen2_vl"``, ...), in :data:`FAMILY_MODULES` order.
_MODULES = tuple(m.__name__.rpartition(".")[2] for m in FAMILY_MODULES)

#: Every family record, in :data:`FAMILY_MODULES` order.
FAMILIES: tuple[Family, ...] = tuple(m.FAMILY for m in FAMILY_MODULES)

#: ``config.model_type -> Family``: the mapping every lookup goes through.
FAMILIES_BY_TYPE = MappingProxyType({t: f for f in FAMILIES for t in f.model_types})

#: The family preprocessing and prompts use when none is named (the first Qwen family).
DEFAULT_FAMILY = FAMILIES[0].name


def _model_type(obj) -> str | None:
    """``obj``'s model_type: a string as is, else ``obj.model_type`` or ``obj.config.model_type``."""
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(getattr(obj, "model_type", None), str):
        return obj.model_type
    if isinstance(obj, dict):
        return obj.get("model_type")
    return getattr(getattr(obj, "config", None), "model_type", None)


def family_for(obj) -> Family:
    """The :class:`Family` of a model, a config, an architecture dict or a ``model_type`` string.

    Raises:
        ValueError: one line naming the model_type and listing the supported ones.
    """
    model_type = _model_type(obj)
    family = FAMILIES_BY_TYPE.get(model_type)
    if family is None:
        raise ValueError(f"videoprune does not know model_type {model_type!r}; "
                         f"supported: {', '.join(sorted(FAMILIES_BY_TYPE))}")
    return family


def model_types_where(predicate: Callable[[Family], bool]) -> tuple[str, ...]:
    """Every registered model_type whose family satisfies ``predicate`` (e.g. ``lambda f: f.stts``), in order."""
    return tuple(t for t, f in FAMILIES_BY_TYPE.items() if predicate(f))


def vision_towers() -> dict[str, str]:
    """``vision tower class name -> family name`` of the Qwen-style towers :mod:`~videoprune.models.qwen_vision` drives."""
    return vision_tower_families()
