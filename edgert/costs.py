"""What each stage is expected to cost, learned online, so a frame gives up before work that cannot fit.

Costs on a shared two-core board drift in phases of seconds (the host moves vCPUs; another
process wants a core), so one measurement at start would be wrong within minutes: each stage
keeps a window of its recent durations and expects a quantile of them (`runtime.cost_quantile`:
the median by default, so a frame is given up on only when a typical run could not finish; a
higher quantile gives up more readily, which saves CPU on an overloaded board but also loses
frames that would have made it).

A run stopped at its deadline says only "at least this long". Such runs do not count towards
the percentile: if one frame in six spikes past the deadline, the other five should still be
started (the guard handles the sixth). Only when most recent runs of a stage were stopped is
the stage expected not to fit at all; the first run that then finishes (a probe) clears them,
because it shows the board has time again.
"""

from __future__ import annotations

INF = float("inf")

# Building and sending the record decides whether an `ok` may still be sent: that margin must
# cover nearly every send, not a typical one.
STAGE_QUANTILE = {"publish": 0.99}
# A batch of several sources' frames ("infer@k") is run only when it is expected to fit, and one
# that overruns loses frames that singly would have made it: expected at a high percentile.
BATCH_QUANTILE = 0.9


class StageCosts:
    """Per stage: the `quantile` of the last `window` durations, refreshed every `refresh` runs.

    A stage skipped because it was expected not to fit produces no new sample, so a stale high
    estimate could lock itself in; after `probe_after` frames in a row were given up on, the
    next frame is a probe that runs every stage whatever the estimates say (the guard still
    publishes at the deadline if they were right), and the windows learn.
    """

    def __init__(self, window: int = 64, quantile: float = 0.5, refresh: int = 8,
                 min_samples: int = 8, probe_after: int = 16) -> None:
        self.window, self.quantile, self.refresh = window, quantile, refresh
        self.min_samples, self.probe_after = min_samples, probe_after
        # Plain lists: one element written per stage per frame, where numpy's per-call cost
        # would be most of the work.
        self._rings: dict[str, list[float]] = {}
        self._count: dict[str, int] = {}
        self._expected: dict[str, float] = {}
        self._refused = 0   # frames given up on in a row

    def observe(self, stage: str, seconds: float, stopped: bool = False) -> None:
        """A stage's duration; `stopped`: it was cut off at the deadline (a lower bound)."""
        ring = self._rings.get(stage)
        if ring is None:
            ring = self._rings[stage] = [0.0] * self.window
            self._count[stage] = 0
        n = self._count[stage]
        if not stopped and self._expected.get(stage) == INF:
            n = self._forget_stopped(stage, ring, n)
        ring[n % self.window] = -seconds if stopped else seconds   # the sign marks stopped runs
        n += 1
        self._count[stage] = n
        if n >= self.min_samples and (n % self.refresh == 0 or n == self.min_samples):
            self._refresh(stage, ring[:min(n, self.window)])

    def _refresh(self, stage: str, samples: list[float]) -> None:
        done = sorted(v for v in samples if v >= 0.0)   # ≤ window values, every `refresh` runs
        if 2 * len(done) < len(samples):
            self._expected[stage] = INF
        elif done:
            q = STAGE_QUANTILE.get(stage) or \
                (BATCH_QUANTILE if stage.startswith("infer@") else self.quantile)
            self._expected[stage] = done[min(len(done) - 1, int(q * len(done)))]

    def _forget_stopped(self, stage: str, ring: list[float], n: int) -> int:
        kept = [v for v in ring[:min(n, self.window)] if v >= 0.0]
        ring[:len(kept)] = kept
        self._expected.pop(stage, None)
        return len(kept)

    def expected(self, stage: str) -> float:
        """Seconds; 0 while the stage has too few samples to say."""
        return self._expected.get(stage, 0.0)

    def probe(self) -> bool:
        """At a frame's start: True if it is a probe and must ignore `fits`."""
        if self._refused >= self.probe_after:
            self._refused = 0
            return True
        return False

    def fits(self, stage: str, remaining_s: float, then: tuple[str, ...] = ()) -> bool:
        """Whether to start `stage` with `remaining_s` left, when the stages in `then` must
        follow it before the deadline too (a refusal counts towards the next probe)."""
        need = self._expected.get(stage, 0.0)
        for later in then:
            need += self._expected.get(later, 0.0)
        if remaining_s >= need:
            return True
        self._refused += 1
        return False

    def refused(self) -> None:
        """A stage given up on without asking `fits` (counts towards the next probe)."""
        self._refused += 1

    def passed(self) -> None:
        """A frame got through every stage: no probe is due."""
        self._refused = 0

    def snapshot(self) -> dict[str, float]:
        """Expected cost per stage in ms, for the run summary."""
        return {k: round(v * 1e3, 3) for k, v in self._expected.items()}
