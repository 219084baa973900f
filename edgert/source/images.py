"""A folder of still images, or one image, as a finite video: decoded by cv2.imread, exactly."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edgert.config.types import IMAGE_SUFFIXES, SourceConfig
from edgert.clock import Clock
from edgert.errors import SourceError, SourceUnavailable
from edgert.source.base import Shot, redact

EXTENSIONS = IMAGE_SUFFIXES


class ImageFolderReader:
    """The folder's image files sorted by name, or the one image `target` names; the listing is
    taken again on every open."""

    live = False

    def __init__(self, cfg: SourceConfig, clock: Clock) -> None:
        self.clock = clock
        self.description = redact(cfg.url)
        self.folder = Path(cfg.target)
        self._files: list[Path] = []
        self._next = 0

    def _listing(self) -> list[Path]:
        if self.folder.suffix.lower() in EXTENSIONS and self.folder.is_file():
            return [self.folder]
        try:
            names = sorted(os.listdir(self.folder))
        except OSError:
            return []
        return [self.folder / n for n in names
                if Path(n).suffix.lower() in EXTENSIONS and (self.folder / n).is_file()]

    def validate(self) -> None:
        where = f"source {self.description}"
        kinds = ", ".join(sorted(e[1:] for e in EXTENSIONS))
        if not self.folder.is_dir() and not self.folder.is_file():
            raise SourceUnavailable(f"{where}: there is no folder (or image file) "
                                    f"{self.folder}; fix source.url or create it")
        if self.folder.is_file() and not self._listing():
            raise SourceUnavailable(f"{where}: {self.folder} is not an image file ({kinds}); "
                                    "fix source.url")
        if not self._listing():
            raise SourceUnavailable(f"{where}: the folder {self.folder} has no image files "
                                    f"({kinds}); put images there or fix source.url")

    def open(self) -> None:
        self._files, self._next = self._listing(), 0
        if not self._files:
            raise SourceUnavailable(f"source {self.description}: {self.folder} holds no image "
                                    "any more")

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
