"""Real frames to calibrate on and other frames to judge on, so agreement is not measured on what was fitted."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from edgert.errors import UsageError
from edgert.source.images import EXTENSIONS


@dataclass(frozen=True, slots=True)
class FrameSets:
    """BGR frames to calibrate on and frames to judge agreement on, and where the latter came from."""

    calib: tuple[np.ndarray, ...]
    evaluate: tuple[np.ndarray, ...]
    held_out: bool     # evaluation frames are disjoint from the calibration frames
    eval_note: str     # one phrase for the report: which frames agreement was measured on


# A folder without images but with these is a folder of videos (say, one clip per camera).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg",
                              ".ts"})


def _files(folder: Path, extensions: frozenset[str]) -> list[Path]:
    return [folder / n for n in sorted(os.listdir(folder))
            if Path(n).suffix.lower() in extensions and (folder / n).is_file()]


def _images(folder: Path) -> list[Path]:
    files = _files(folder, EXTENSIONS)
    if not files:
        images, videos = ", ".join(sorted(EXTENSIONS)), ", ".join(sorted(VIDEO_EXTENSIONS))
        raise UsageError(f"{folder}: the folder holds no image files ({images}) and no videos "
                         f"({videos}); point --calib at a folder of photos or videos, or at a video")
    return files


def _read_images(files: Sequence[Path]) -> list[np.ndarray]:
    out = []
    for f in files:
        image = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if image is None:
            raise UsageError(f"{f}: OpenCV cannot read this image; remove it from the folder or "
                             "re-save it as JPEG or PNG")
        out.append(image)
    return out


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n), first and last included when k > 1."""
    if k >= n:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


def _video_frames(path: Path, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """The wanted frames, read sequentially (seeking is inexact for many codecs)."""
    cap = cv2.VideoCapture(str(path))
    wanted, out, i = set(indices), {}, 0
    try:
        last = max(wanted) if wanted else -1
        while i <= last and cap.isOpened():
            if not cap.grab():
                break
            if i in wanted:
                ok, image = cap.retrieve()
                if ok and image is not None:
                    out[i] = image.copy()
            i += 1
    finally:
        cap.release()
    return out


def _video_length(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        ok = cap.isOpened() and cap.grab()
    finally:
        cap.release()
    if not ok or n <= 0:
        raise UsageError(f"{path}: OpenCV cannot read frames from this file; give a folder of "
                         "images or a video it can decode (e.g. H.264 MP4)")
    return n


def _check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder; give {what} as a folder of images or a video")


def _from_video(path: Path, count: int, holdout: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Calibration and held-out frames interleaved over the whole video, never the same frame."""
    n = _video_length(path)
    slots = spread(n, count + holdout)
    # A video shorter than count + holdout frames gives both kinds in proportion.
    take = round(len(slots) * holdout / (count + holdout)) if count else len(slots)
    eval_pos = set(spread(len(slots), take)) if take else set()
    calib_idx = [s for j, s in enumerate(slots) if j not in eval_pos]
    eval_idx = [s for j, s in enumerate(slots) if j in eval_pos]
    frames = _video_frames(path, calib_idx + eval_idx)
    if not frames:
        raise UsageError(f"{path}: OpenCV opened the file but decoded no frames; re-encode it "
                         "(e.g. H.264 MP4) or give a folder of images")
    return ([frames[i] for i in calib_idx if i in frames],
            [frames[i] for i in eval_idx if i in frames])


def _from_videos(videos: Sequence[Path], count: int,
                 holdout: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Both kinds of frames shared out over several videos, each video giving its part."""
    n = len(videos)
    calib: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for i, video in enumerate(videos):
        # Shares differ by at most one frame; earlier videos take the remainder.
        c, h = _from_video(video, count // n + (i < count % n), holdout // n + (i < holdout % n))
        calib += c
        held += h
    return calib, held


def _split(src: Path, count: int, holdout: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`count` frames of SRC and up to `holdout` other frames of it, both spread over it."""
    if src.is_dir() and not _files(src, EXTENSIONS) and _files(src, VIDEO_EXTENSIONS):
        return _from_videos(_files(src, VIDEO_EXTENSIONS), count, holdout)
    if src.is_dir():
        files = _images(src)
        chosen = spread(len(files), count)
        taken = set(chosen)
        rest = [i for i in range(len(files)) if i not in taken]
        rest = [rest[j] for j in spread(len(rest), holdout)] if holdout else []
        return _read_images([files[i] for i in chosen]), _read_images([files[i] for i in rest])
    if src.suffix.lower() in EXTENSIONS:
        images = _read_images([src])
        return (images, []) if count else ([], images)
    return _from_video(src, count, holdout)


def collect(calib: Path, count: int, eval_sources: Sequence[Path] = (),
            eval_count: int = 64) -> FrameSets:
    """`count` calibration frames from CALIB and up to `eval_count` evaluation frames.

    Evaluation frames come from `eval_sources` when given (CALIB itself may be one of them:
    it then gives frames calibration does not use), else from frames of CALIB that
    calibration does not use; with nothing left over, the calibration frames themselves
    (the report says so).
    """
    _check_exists(calib, "--calib")
    for src in eval_sources:
        _check_exists(src, "the evaluation source")
    per = max(1, -(-eval_count // len(eval_sources))) if eval_sources else eval_count
    same = [s for s in eval_sources if s.resolve() == calib.resolve()]
    calib_frames, held = _split(calib, count, per if same or not eval_sources else 0)
    if eval_sources:
        evaluate: list[np.ndarray] = []
        for src in eval_sources:
            evaluate += held if src in same else _split(src, 0, per)[1]
        names = ", ".join(s.name for s in eval_sources)
        note = f"{len(evaluate)} frames from {names} (not used for calibration)"
        if evaluate:
            return FrameSets(tuple(calib_frames), tuple(evaluate), True, note)
    if held:
        note = f"{len(held)} held-out frames of {calib.name} (not used for calibration)"
        return FrameSets(tuple(calib_frames), tuple(held), True, note)
    note = (f"the {len(calib_frames)} calibration frames themselves: {calib.name} has no frames "
            "to spare, so agreement may be optimistic (give more images than --frames, or a video)")
    return FrameSets(tuple(calib_frames), tuple(calib_frames), False, note)
