"""The annotated video: what the model saw and what was decided, drawn on each decided frame."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgert.config.types import Config
from edgert.decide.zones import ZoneGeometry
from edgert.records import Det

FONT = cv2.FONT_HERSHEY_SIMPLEX
GREEN, RED, AMBER, CYAN, WHITE = (60, 200, 60), (40, 40, 230), (0, 170, 255), (230, 200, 0), (255, 255, 255)


@dataclass(frozen=True, slots=True)
class Scene:
    """What one frame's picture says, copied off the loop so drawing can happen elsewhere."""

    image: np.ndarray        # a private copy: the source's buffer is recycled
    frame_id: int
    detections: tuple[Det, ...]
    action: str
    status: str              # ok, or the overrun's cause
    latency_ms: float


class Annotator:
    """Draws zones, lines, boxes, the action and latency vs budget; writes an MP4."""

    def __init__(self, cfg: Config, path: Path, fps: float, size_wh: tuple[int, int]) -> None:
        self.cfg, self.path, self.size_wh = cfg, path, size_wh
        self.zones = [ZoneGeometry(z) for z in cfg.zones]
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size_wh)
        if not self.writer.isOpened():
            raise OSError(f"OpenCV cannot write an MP4 at {path}")
        self.frames = 0

    def write(self, s: Scene) -> None:
        img = s.image
        if (img.shape[1], img.shape[0]) != self.size_wh:   # the writer's size is fixed
            img = cv2.resize(img, self.size_wh)
        self.draw(img, s)
        self.writer.write(img)
        self.frames += 1

    def draw(self, img: np.ndarray, s: Scene) -> None:
        h, w = img.shape[:2]
        for z in self.zones:
            pts = np.round(np.asarray(z.pixels((h, w)), np.float64)).astype(np.int32)
            cv2.polylines(img, [pts], True, CYAN, 2)
            cv2.putText(img, z.zone.name, tuple(int(v) for v in pts[0] + (4, 16)), FONT, 0.5,
                        CYAN, 1, cv2.LINE_AA)
        for ln in self.cfg.lines:
            p1, p2 = (int(ln.p1[0]), int(ln.p1[1])), (int(ln.p2[0]), int(ln.p2[1]))
            cv2.line(img, p1, p2, AMBER, 2)
            cv2.putText(img, ln.name, (p1[0] + 4, p1[1] + 16), FONT, 0.5, AMBER, 1, cv2.LINE_AA)
        for d in s.detections:
            if d.box is None:
                continue
            x1, y1, x2, y2 = (int(round(v)) for v in d.box)
            cv2.rectangle(img, (x1, y1), (x2, y2), GREEN, 2)
            cv2.putText(img, f"{d.label} {d.score:.2f}", (x1, max(12, y1 - 4)), FONT, 0.45,
                        GREEN, 1, cv2.LINE_AA)
            for x, y, _ in d.keypoints or ():
                cv2.circle(img, (int(round(x)), int(round(y))), 3, AMBER, -1, cv2.LINE_AA)
        budget = self.cfg.runtime.budget_ms
        over = s.latency_ms > budget or s.status != "ok"
        banner = (f"frame {s.frame_id}  {s.status}  action {s.action}  "
                  f"{s.latency_ms:.1f}/{budget:g} ms")
        cv2.rectangle(img, (0, 0), (w, 22), (0, 0, 0), -1)
        cv2.putText(img, banner, (6, 16), FONT, 0.5, RED if over else WHITE, 1, cv2.LINE_AA)
        # The latency as a bar against the budget: the share of the frame's width it used.
        used = min(1.0, s.latency_ms / budget) if budget > 0 else 0.0
        cv2.rectangle(img, (0, 22), (int(w * used), 26), RED if over else GREEN, -1)

    def close(self) -> None:
        self.writer.release()
