"""Per-step EVS pruning rates for uptraining: fixed, uniform [a, b], or Beta(α, β) scaled to [0, max].

A rate is a pure function of (seed, optimizer step, micro-batch index): every rank draws the
same rate for the same micro-batch, and a resumed run draws exactly the rates an uninterrupted
run would, without saving any sampler state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["RateDistribution", "rate_for_step"]

KINDS = ("fixed", "uniform", "beta")


@dataclass(frozen=True)
class RateDistribution:
    """A distribution of EVS pruning rates q in [0, 1).

    ``fixed:q`` always q; ``uniform:a,b`` uniform on [a, b] (0 <= a <= b < 1);
    ``beta:alpha,beta,max`` ``max * Beta(alpha, beta)`` (alpha, beta > 0, 0 < max < 1).
    """

    kind: str
    params: tuple[float, ...]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"rate_dist kind must be one of {KINDS}, got {self.kind!r}")
        p = self.params
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in p):
            raise ValueError(f"rate_dist parameters must be finite numbers, got {p}")
        if self.kind == "fixed" and not (len(p) == 1 and 0.0 <= p[0] < 1.0):
            raise ValueError(f"rate_dist 'fixed:q' needs one q in [0, 1), got {p}")
        if self.kind == "uniform" and not (len(p) == 2 and 0.0 <= p[0] <= p[1] < 1.0):
            raise ValueError(f"rate_dist 'uniform:a,b' needs 0 <= a <= b < 1, got {p}")
        if self.kind == "beta" and not (len(p) == 3 and p[0] > 0 and p[1] > 0 and 0.0 < p[2] < 1.0):
            raise ValueError(f"rate_dist 'beta:alpha,beta,max' needs alpha > 0, beta > 0, 0 < max < 1, got {p}")

    @classmethod
    def parse(cls, spec: str) -> "RateDistribution":
        """``"fixed:0.75"``, ``"uniform:0.3,0.9"``, ``"beta:2,2,0.9"`` -> a distribution (ValueError otherwise)."""
        if not isinstance(spec, str) or ":" not in spec:
            raise ValueError(f"rate_dist must look like 'fixed:q', 'uniform:a,b' or 'beta:alpha,beta,max', got {spec!r}")
        kind, _, rest = spec.partition(":")
        try:
            params = tuple(float(x) for x in rest.split(","))
        except ValueError:
            raise ValueError(f"rate_dist parameters must be numbers, got {spec!r}") from None
        return cls(kind.strip(), params)

    @property
    def is_fixed(self) -> bool:
        return self.kind == "fixed" or (self.kind == "uniform" and self.params[0] == self.params[1])

    @property
    def mean(self) -> float:
        p = self.params
        if self.kind == "fixed":
            return p[0]
        if self.kind == "uniform":
            return (p[0] + p[1]) / 2
        return p[2] * p[0] / (p[0] + p[1])

    def sample(self, rng: np.random.Generator) -> float:
        """One rate in [0, 1) from ``rng``."""
        p = self.params
        if self.kind == "fixed":
            return float(p[0])
        if self.kind == "uniform":
            return float(rng.uniform(p[0], p[1])) if p[1] > p[0] else float(p[0])
        return float(min(p[2] * rng.beta(p[0], p[1]), p[2]))

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(f'{v:g}' for v in self.params)}"


def rate_for_step(dist: RateDistribution, seed: int, step: int, micro: int = 0) -> float:
    """The rate of micro-batch ``micro`` of optimizer step ``step`` (0-based); same on every rank."""
    return dist.sample(np.random.default_rng([int(seed), int(step), int(micro)]))
