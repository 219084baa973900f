"""Per-stage latency kept in fixed ring buffers, so long runs report percentiles without growing."""

from __future__ import annotations

from typing import Mapping

import numpy as np


class LatencyLog:
    """The last `size` values of each stage's latency (ms)."""

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._rings: dict[str, np.ndarray] = {}
        self._count: dict[str, int] = {}

    def add(self, latency_ms: Mapping[str, float]) -> None:
        for stage, v in latency_ms.items():
            ring = self._rings.get(stage)
            if ring is None:
                ring = self._rings[stage] = np.empty(self.size, np.float64)
                self._count[stage] = 0
            ring[self._count[stage] % self.size] = v
            self._count[stage] += 1

    def count(self, stage: str) -> int:
        """Values ever added for `stage` (the ring keeps the last `size`)."""
        return self._count.get(stage, 0)

    def recent(self, stage: str, n: int) -> np.ndarray:
        """The last `n` values of `stage`, oldest first."""
        count = self._count.get(stage, 0)
        n = min(n, count, self.size)
        if not n:
            return np.zeros(0)
        end = count % self.size
        ring = self._rings[stage]
        return ring[end - n:end] if end >= n else np.concatenate([ring[end - n:], ring[:end]])

    def values(self, stage: str) -> np.ndarray:
        n = min(self._count.get(stage, 0), self.size)
        return self._rings[stage][:n] if n else np.zeros(0)

    def percentiles(self, qs: tuple[float, ...] = (50, 90, 99),
                    last: int | None = None) -> dict[str, dict[str, float]]:
        """Per stage over all kept values, or the `last` ones (cheaper, for periodic metrics)."""
        out = {}
        for stage in self._rings:
            v = self.values(stage) if last is None else self.recent(stage, last)
            if v.size:
                out[stage] = {f"p{q:g}": round(float(np.percentile(v, q)), 3) for q in qs}
                out[stage]["max"] = round(float(v.max()), 3)
        return out
