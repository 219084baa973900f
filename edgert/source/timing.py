"""When the next frame is due: pacing of recorded media, the fps cap, and reopen backoff."""

from __future__ import annotations

import random


class Pacer:
    """Due times on an absolute schedule at `fps`, so a paced medium neither drifts nor bursts.

    A reader that falls more than one period behind restarts the schedule at `now` instead of
    catching up with a burst of frames nobody could use.
    """

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._due: float | None = None

    def due(self, now: float) -> float:
        if self._due is None or now - self._due > self.period:
            self._due = now
        return self._due

    def advance(self) -> None:
        if self._due is not None:
            self._due += self.period


class RateCap:
    """Lets at most `fps` frames a second through from a faster live source.

    The schedule is absolute, so the average holds; a frame may arrive a quarter period
    early, because frame timestamps jitter and a strict comparison would halve the rate of a
    source running at exactly the cap.
    """

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._next = float("-inf")

    def allow(self, now: float) -> bool:
        if now < self._next - 0.25 * self.period:
            return False
        behind = now - self._next >= self.period
        self._next = now + self.period if behind else self._next + self.period
        return True


class Backoff:
    """Exponential backoff with full jitter: wait n is uniform in [0, min(max, initial·2ⁿ)].

    The jitter keeps a fleet of boxes that lost the same camera server from retrying in step.
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial, self.maximum = initial, max(initial, maximum)
        self._attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * 2.0 ** min(self._attempt, 62))
        self._attempt += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self._attempt = 0
