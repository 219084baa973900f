"""A folder of still images as a finite video, for calibration sets and bench fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edgert.config.types import SourceConfig
from edgert.clock import Clock
from edgert.errors import SourceError, SourceUnavailable
from edgert.source.base import Shot, redact

EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


class ImageFolderReader:
    """The folder's image files sorted by name; the listing is taken again on every open."""

    live = False

    def __init__(self, cfg: SourceConfig, clock: Clock) -> None:
        self.clock = clock
        self.description = redact(cfg.url)
        self.folder = Path(cfg.target)
        self._files: list[Path] = []
        self._next = 0

    def _listing(self) -> list[Path]:
        try:
            names = sorted(os.listdir(self.folder))
        except OSError:
            return []
        return [self.folder / n for n in names
                if Path(n).suffix.lower() in EXTENSIONS and (self.folder / n).is_file()]

    def validate(self) -> None:
        where = f"source {self.description}"
        if not self.folder.is_dir():
            raise SourceUnavailable(f"{where}: there is no folder {self.folder}; "
                                    "fix source.url or create it")
        if not self._listing():
            kinds = ", ".join(sorted(e[1:] for e in EXTENSIONS))
            raise SourceUnavailable(f"{where}: the folder {self.folder} has no image files "
                                    f"({kinds}); put images there or fix source.url")

    def open(self) -> None:
        self._files, self._next = self._listing(), 0
        if not self._files:
            raise SourceUnavailable(f"source {self.description}: the folder {self.folder} "
                                    "has no image files any more")

    def read(self, into: np.ndarray | None) -> Shot | None:
        if self._next >= len(self._files):
            return None
        path = self._files[self._next]
        self._next += 1
        # imread(path, dst) would decode in place but leaves dst untouched on a corrupt file,
        # with no way to tell; the transient decode is cheap next to the copy we keep.
        decoded = cv2.imread(str(path), cv2.IMREAD_COLOR)
        grabbed = self.clock.now()
        if decoded is None:
            raise SourceError(f"cannot decode {path}")
        if into is None or into.shape != decoded.shape:
            return decoded, grabbed, None
        np.copyto(into, decoded)
        return into, grabbed, None

    def rate(self) -> float | None:
        return None

    def close(self) -> None:
        self._files, self._next = [], 0
