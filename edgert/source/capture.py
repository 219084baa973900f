"""OpenCV's VideoCapture as a Reader: files, cameras, /dev/video devices, streams, GStreamer."""

from __future__ import annotations

import math
import os
import re
import sys

import cv2
import numpy as np

from edgert.config.types import SourceConfig
from edgert.clock import Clock
from edgert.errors import SourceError, SourceUnavailable
from edgert.source.base import Shot, redact

# V4L2 directly: CAP_ANY would also try GStreamer/FFmpeg and report a less useful failure.
_CAMERA_BACKEND = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY


def has_gstreamer() -> bool:
    found = re.search(r"GStreamer:\s*(\S+)", cv2.getBuildInformation())
    return found is not None and found.group(1).upper() != "NO"


class CaptureReader:
    """One cv2.VideoCapture, reopened from scratch on every `open` (also to loop a file).

    Network URLs (rtsp://, http(s)://, udp:// …) go through FFmpeg with an open timeout and
    a read timeout of `stall_timeout_s`, so a silent stream fails a read instead of blocking
    for OpenCV's default 30 s. RTSP gets OpenCV's own default, `rtsp_flags=prefer_tcp` (TCP
    first, then UDP), applied whenever OPENCV_FFMPEG_CAPTURE_OPTIONS is unset; a user who
    needs other FFmpeg options sets that variable and we leave it alone.
    V4L2 has no read-timeout property, only the process-wide OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT
    (whole seconds, default 10, read once at the first V4L2 read); unless the user set it, the
    first camera sets it from its stall_timeout_s. GStreamer pipelines have no read timeout.
    """

    def __init__(self, cfg: SourceConfig, clock: Clock) -> None:
        self.clock = clock
        self.kind, self.target, self.description = cfg.kind, cfg.target, redact(cfg.url)
        self.live = cfg.kind != "file"
        self._shown = f"camera {cfg.target}" if cfg.kind == "camera" else redact(cfg.target)
        self._read_ms = max(1, round(cfg.stall_timeout_s * 1000))
        # Opening must at least survive FFmpeg's probing of a live stream (about a second).
        self._open_ms = max(2000, 2 * self._read_ms)
        self._cap: cv2.VideoCapture | None = None

    def validate(self) -> None:
        where = f"source {self.description}"
        if self.kind == "file" and not os.path.isfile(self.target):
            raise SourceUnavailable(f"{where}: there is no video file at {self.target}; "
                                    "fix source.url or put the file there")
        if self.kind == "camera" and not re.fullmatch(r"\d+", self.target.strip()):
            raise SourceUnavailable(f"{where}: camera index {self.target!r} is not a whole "
                                    "number; write camera:0, or name the device as /dev/video0")
        if self.kind == "gstreamer" and not has_gstreamer():
            raise SourceUnavailable(f"{where}: this OpenCV build has no GStreamer; install an "
                                    "OpenCV built with GStreamer or use a file:/rtsp:// URL")

    def _new_capture(self) -> cv2.VideoCapture:
        if self.kind in ("camera", "v4l"):
            os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT",
                                  str(max(1, math.ceil(self._read_ms / 1000))))
            device: int | str = int(self.target) if self.kind == "camera" else self.target
            return cv2.VideoCapture(device, _CAMERA_BACKEND)
        if self.kind == "gstreamer":
            return cv2.VideoCapture(self.target, cv2.CAP_GSTREAMER)
        if self.kind == "network":
            return cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self._open_ms,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, self._read_ms])
        return cv2.VideoCapture(self.target, cv2.CAP_FFMPEG)

    def open(self) -> None:
        self.close()
        why = "OpenCV could not open it"
        try:
            cap = self._new_capture()
        except cv2.error as exc:  # a malformed GStreamer pipeline raises instead of failing
            cap, why = None, str(exc).strip().splitlines()[-1]
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            if not self.live:
                raise SourceUnavailable(
                    f"source {self.description}: OpenCV's FFmpeg backend cannot read "
                    f"{self.target}; check that it is a video, or convert it with "
                    "ffmpeg -i IN -c:v libx264 OUT.mp4")
            raise SourceError(f"cannot open {self._shown}: {why}")
        self._cap = cap

    def read(self, into: np.ndarray | None) -> Shot | None:
        cap = self._cap
        if cap is None:
            raise SourceError(f"{self._shown} is not open")
        if not cap.grab():
            if not self.live:
                return None
            if self.kind == "network":
                raise SourceError("no frame: the stream ended, failed, or sent nothing for "
                                  f"{self._read_ms / 1000:g} s")
            raise SourceError(f"no frame from {self._shown}: it stopped, stalled or went away")
        grabbed = self.clock.now()
        ok, image = cap.retrieve() if into is None else cap.retrieve(image=into)
        if not ok or image is None:
            raise SourceError("a grabbed frame could not be decoded")
        if image.ndim == 2:  # a grey camera: the contract is BGR
            fits = into is not None and into.shape == (*image.shape, 3)
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR, dst=into if fits else None)
        if self.live:
            return image, grabbed, None
        # The container's presentation time of the frame just grabbed; some files have none.
        pos = cap.get(cv2.CAP_PROP_POS_MSEC)
        return image, grabbed, pos / 1e3 if math.isfinite(pos) and pos > 0.0 else None

    def rate(self) -> float | None:
        fps = self._cap.get(cv2.CAP_PROP_FPS) if self._cap is not None else 0.0
        return fps if math.isfinite(fps) and 0.0 < fps <= 1000.0 else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
