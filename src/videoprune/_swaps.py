"""Reversible replacement of methods on object instances: the one mechanism behind patch(), STTS and bench timers."""

from __future__ import annotations

__all__ = ["MISSING", "MethodSwaps"]

MISSING = object()  # "there was no instance attribute": restoring deletes ours, so the class method shows again


class MethodSwaps:
    """Record ``setattr(obj, name, fn)`` swaps and undo them exactly, last first."""

    def __init__(self) -> None:
        self._saved: list[tuple[object, str, object]] = []

    def swap(self, obj, name: str, fn) -> None:
        """Set ``obj.name = fn`` as an instance attribute, remembering what the instance had before."""
        self._saved.append((obj, name, obj.__dict__.get(name, MISSING)))
        setattr(obj, name, fn)

    def restore(self) -> None:
        """Put every swapped attribute back as it was (deleting ours where there was none)."""
        for obj, name, prev in reversed(self._saved):
            if prev is MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, prev)
        self._saved.clear()
