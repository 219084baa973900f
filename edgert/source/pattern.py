"""A synthetic, endless test picture, so the whole pipeline runs without a camera or a file."""

from __future__ import annotations

import cv2
import numpy as np

from edgert.config.types import SourceConfig
from edgert.clock import Clock
from edgert.errors import SourceUnavailable
from edgert.source.base import Shot, redact


class PatternReader:
    """A fixed colour gradient with a bar that moves each frame and the frame number on it.

    Each frame is drawn in place into the ring buffer: one copy of the gradient, then the
    bar and the text, so a pattern run measures the pipeline and not the generator.
    """

    live = False

    def __init__(self, cfg: SourceConfig, clock: Clock) -> None:
        self.clock = clock
        self.description = redact(cfg.url)
        height, width = cfg.size
        self._shape = (int(height), int(width), 3)
        self._base = self._gradient()
        self._count = 0

    def _gradient(self) -> np.ndarray:
        height, width, _ = self._shape
        rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
        cols = np.linspace(0, 255, width, dtype=np.float32)[None, :]
        base = np.empty(self._shape, np.uint8)
        base[..., 0] = cols
        base[..., 1] = rows
        base[..., 2] = (cols + rows) / 2
        return base

    def validate(self) -> None:
        if min(self._shape[:2]) < 1:
            raise SourceUnavailable(f"source {self.description}: pattern size "
                                    f"{list(self._shape[:2])} is empty; give source.size as "
                                    "[height, width], e.g. [480, 640]")

    def open(self) -> None:
        pass

    def read(self, into: np.ndarray | None) -> Shot | None:
        base = self._base
        image = into if into is not None and into.shape == self._shape else np.empty_like(base)
        np.copyto(image, base)
        height, width, _ = self._shape
        bar = max(4, width // 16)
        x = (self._count * max(1, width // 60)) % max(1, width - bar)
        cv2.rectangle(image, (x, 0), (x + bar, height - 1), (255, 255, 255), -1)
        scale = max(0.4, height / 480)
        text, origin = str(self._count), (8, int(36 * scale))
        for colour, weight in (((0, 0, 0), 4), ((255, 255, 255), 2)):  # outlined: legible anywhere
            cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour,
                        max(1, int(weight * scale)), cv2.LINE_AA)
        self._count += 1
        return image, self.clock.now(), None

    def rate(self) -> float | None:
        return None

    def close(self) -> None:
        pass
