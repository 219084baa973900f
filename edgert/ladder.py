"""The degradation ladder: which rung (main model, or a lighter one) runs now, with hysteresis.

Down: `down_after` missed frames in a row. Up: `up_after` frames in a row on which the rung
above is expected to fit in `headroom` × budget. That expectation is the rung above's own
unloaded cost (measured at warm-up) scaled by how much slower the current rung runs now than
its own unloaded cost — the load on the board, seen through the model that is running. A climb
that fails soon after doubles the wait before the next one (up to 32×), so a board that is
overloaded for good settles on the lighter rung instead of flapping.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgert.config.types import LadderConfig

MAX_BACKOFF = 32


@dataclass(frozen=True, slots=True)
class Switch:
    """One step of the ladder, for logs and the summary."""

    rung: int
    down: bool
    reason: str


class Ladder:
    """Pure state machine, fed once per frame by the loop; rung 0 is the main model."""

    def __init__(self, cfg: LadderConfig, budget_s: float, baseline_s: list[float]) -> None:
        if len(baseline_s) != len(cfg.rungs) + 1:
            raise ValueError("one baseline cost per rung, the main model's first")
        self.cfg, self.budget_s, self.baseline_s = cfg, budget_s, baseline_s
        self.rung = 0
        self.switches = 0
        self.frames = [0] * len(baseline_s)
        self._misses = 0
        self._good = 0
        self._need_up = cfg.up_after
        self._since_climb: int | None = None

    @property
    def top(self) -> int:
        return len(self.baseline_s) - 1

    def record(self, missed: bool, infer_s: float = 0.0, total_s: float = 0.0) -> Switch | None:
        """Account one frame on the current rung; returns the switch it caused, if any."""
        self.frames[self.rung] += 1
        if self._since_climb is not None:
            self._since_climb += 1
            if self._since_climb > 10 * self._need_up:   # the climb held: forget the backoff
                self._need_up, self._since_climb = self.cfg.up_after, None
        if missed:
            self._good = 0
            self._misses += 1
            if self._misses < self.cfg.down_after or self.rung == self.top:
                return None
            if self._since_climb is not None and self._since_climb <= self.cfg.up_after:
                self._need_up = min(self._need_up * 2, self.cfg.up_after * MAX_BACKOFF)
            self._since_climb = None
            self._misses = 0
            return self._move(self.rung + 1, f"{self.cfg.down_after} missed frames in a row")
        self._misses = 0
        if self.rung == 0 or infer_s <= 0.0:
            return None
        load = max(1.0, infer_s / self.baseline_s[self.rung])
        expected = total_s - infer_s + self.baseline_s[self.rung - 1] * load
        if expected > self.cfg.headroom * self.budget_s:
            self._good = 0
            return None
        self._good += 1
        if self._good < self._need_up:
            return None
        self._good, self._since_climb = 0, 0
        return self._move(self.rung - 1, f"{self._need_up} frames with headroom")

    def _move(self, rung: int, reason: str) -> Switch:
        down = rung > self.rung
        self.rung = rung
        self.switches += 1
        return Switch(rung, down, reason)
