"""What `edgert replay` is asked to read and where it may write, checked before any model loads."""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2

from edgert.errors import UsageError

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts")


@dataclass(frozen=True, slots=True)
class Recording:
    """One video file and what its container announces about itself."""

    path: Path
    announced: int | None    # frames the container says it holds (None: it does not say)
    fps: float | None
    width: int
    height: int

    @property
    def stem(self) -> str:
        return self.path.stem


def probe(path: Path) -> Recording:
    """The container's own account of a file; a file OpenCV cannot open is the user's to fix."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise UsageError(f"{path}: OpenCV's FFmpeg backend cannot read this file as a video "
                             "(not a video, or cut off before its index); check the file or "
                             "convert it with ffmpeg -i IN -c:v libx264 OUT.mp4")
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        fps = cap.get(cv2.CAP_PROP_FPS)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    return Recording(path, int(count) if math.isfinite(count) and count > 0 else None,
                     fps if math.isfinite(fps) and 0 < fps <= 1000 else None, w, h)


def recordings(target: Path) -> list[Recording]:
    """One file, or every video file in a folder (sorted by name), probed."""
    if target.is_dir():
        files = sorted(p for p in target.iterdir()
                       if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise UsageError(f"{target}: the folder holds no video file "
                             f"({', '.join(VIDEO_SUFFIXES)}); point replay at a video or a "
                             "folder of videos")
        return [probe(p) for p in files]
    if not target.is_file():
        raise UsageError(f"{target}: there is no such file or folder; give a video file or a "
                         "folder of videos")
    return [probe(target)]


def shortfall(rec: Recording, read: int) -> str | None:
    """Why a file that ended early is not complete, or None. A container's count can be an
    estimate (duration × rate) off by a frame or two, so only a larger gap counts."""
    if rec.announced is None or rec.announced - read <= max(2, rec.announced // 100):
        return None
    return (f"{rec.path}: the recording ended at frame {read} of {rec.announced} the container "
            "announced (truncated or damaged); replay a complete copy")


def writable_dir(out: Path) -> Path:
    """--out, made if missing and proven writable now, not after minutes of replay."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe_path = tempfile.mkstemp(prefix=".edgert-probe-", dir=out)
        os.close(fd)
        os.unlink(probe_path)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e}); choose a "
                         "folder you can write to") from None
    return out
