"""The service's figures as one immutable value, built on the loop's thread and swapped in whole,
so the HTTP thread always reads one consistent moment without a lock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from edgert.records import STAGES
from edgert.stats import LatencyLog

# Latency histogram bucket bounds (ms); +Inf is implied.
BUCKETS_MS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0,
              1000.0, 2000.0)
HIST_STAGES = STAGES + ("total",)


@dataclass(frozen=True)
class Histogram:
    buckets: tuple[tuple[float, int], ...]   # (upper bound ms, cumulative count), +Inf last
    sum_ms: float


@dataclass(frozen=True)
class Snapshot:
    at: float                                   # monotonic, when taken
    counts: Mapping[str, int] = field(default_factory=dict)      # records by status
    misses: Mapping[tuple[str, str], int] = field(default_factory=dict)   # (stage, cause)
    latency: Mapping[str, Histogram] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    providers: tuple[str, ...] = ()
    not_bound: tuple[str, ...] = ()
    rung: int = 0
    rung_name: str = "main"
    fps: float = 0.0


class Histograms:
    """Cumulative per-stage histograms, fed from the run's LatencyLog by what is new since the
    last call (the log keeps 8,192 values per stage; calls come far more often than that)."""

    def __init__(self) -> None:
        self._bounds = np.array(BUCKETS_MS)
        self._counts = {s: np.zeros(len(BUCKETS_MS) + 1, np.int64) for s in HIST_STAGES}
        self._sums = dict.fromkeys(HIST_STAGES, 0.0)
        self._seen = dict.fromkeys(HIST_STAGES, 0)

    def update(self, log: LatencyLog) -> dict[str, Histogram]:
        out = {}
        for stage in HIST_STAGES:
            total = log.count(stage)
            new = log.recent(stage, total - self._seen[stage])
            self._seen[stage] = total
            if new.size:
                idx = np.searchsorted(self._bounds, new, side="left")
                self._counts[stage] += np.bincount(idx, minlength=len(BUCKETS_MS) + 1)
                self._sums[stage] += float(new.sum())
            cum = np.cumsum(self._counts[stage])
            out[stage] = Histogram(tuple(zip(BUCKETS_MS + (float("inf"),), map(int, cum))),
                                   self._sums[stage])
        return out
