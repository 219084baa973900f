"""A few reusable image buffers, so steady-state capture allocates no pixels."""

from __future__ import annotations

from collections import deque

import numpy as np


class BufferRing:
    """Image buffers lent out by slot number and returned when their frame is superseded.

    Free slots are reused oldest-first, so a frame the consumer has let go of stays intact
    for as long as possible. Each buffer has one read-only view, made once, which is what
    frames carry: consumers cannot scribble on a buffer the grabber will reuse.
    Not thread-safe: the owning source holds its own lock around every call.
    """

    def __init__(self, count: int) -> None:
        self._images: list[np.ndarray | None] = [None] * count
        self._views: list[np.ndarray | None] = [None] * count
        self._free: deque[int] = deque(range(count))

    def has_free(self) -> bool:
        return bool(self._free)

    def acquire(self) -> int:
        return self._free.popleft()

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def buffer(self, slot: int) -> np.ndarray | None:
        """Where the next image for `slot` should be decoded (None until first filled)."""
        return self._images[slot]

    def fill(self, slot: int, image: np.ndarray) -> np.ndarray:
        """Record what was decoded into `slot` and return the read-only view to hand out."""
        view = self._views[slot]
        if image is not self._images[slot] or view is None:
            # First use, or the reader had to allocate (size changed): adopt its array.
            self._images[slot] = image
            view = image.view()
            view.setflags(write=False)
            self._views[slot] = view
        return view
