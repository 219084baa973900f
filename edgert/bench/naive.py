"""The loop a user writes by hand (VideoCapture → cv2 letterbox → session.run → numpy + NMSBoxes):
what edgert must beat on the same model and video."""

from __future__ import annotations

import dataclasses
import time

import cv2
import numpy as np
import onnxruntime as ort

from edgert.config.types import Config
from edgert.errors import UsageError
from edgert.infer.inputs import layered
from edgert.infer.model import session_options

FAMILIES = ("yolov8", "yolox")
STRIDES = (8, 16, 32)


def _grid(hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    cells, steps = [], []
    for s in STRIDES:
        ys, xs = np.mgrid[0:hw[0] // s, 0:hw[1] // s]
        cells.append(np.stack([xs.ravel(), ys.ravel()], 1))
        steps.append(np.full((xs.size, 1), s))
    return np.concatenate(cells).astype(np.float32), np.concatenate(steps).astype(np.float32)


class NaiveLoop:
    """One frame per `step`: read, letterbox, normalise, run, decode, NMS. Same session options
    as edgert's (threads, spinning), so only the loop around `session.run` differs."""

    def __init__(self, cfg: Config, session: ort.InferenceSession, hw: tuple[int, int]) -> None:
        self.cfg, self.session, self.hw = cfg, session, hw
        self.input_name = session.get_inputs()[0].name
        self.cap = cv2.VideoCapture(cfg.source.target, cv2.CAP_FFMPEG)
        if not self.cap.isOpened():
            raise UsageError(f"naive loop: cannot open {cfg.source.target}")
        self.cells, self.steps = _grid(hw)
        self.last_capture_s = 0.0

    @classmethod
    def open(cls, cfg: Config) -> NaiveLoop:
        if cfg.source.kind != "file" or cfg.model.family not in FAMILIES:
            raise UsageError(f"the naive loop reads a video file with a {'/'.join(FAMILIES)} "
                             f"model; {cfg.file} has a {cfg.source.kind} source and family "
                             f"{cfg.model.family!r}")
        session = ort.InferenceSession(str(cfg.model.path), session_options(cfg.runtime),
                                       providers=["CPUExecutionProvider"])
        shape = session.get_inputs()[0].shape
        hw = (shape[2], shape[3]) if all(isinstance(d, int) for d in shape[2:4]) else None
        hw = hw or cfg.model.input.size or (640, 640)
        # The input edgert feeds this model, metadata included, so both loops see the same.
        described, _ = layered(cfg.model.input, session.get_modelmeta().custom_metadata_map or {})
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, input=described))
        return cls(cfg, session, tuple(hw))

    def read(self) -> np.ndarray:
        ok, image = self.cap.read()
        if not ok:   # loop the file, as bench does for edgert
            self.cap.release()
            self.cap = cv2.VideoCapture(self.cfg.source.target, cv2.CAP_FFMPEG)
            ok, image = self.cap.read()
        return image

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        inp = self.cfg.model.input
        h, w = image.shape[:2]
        r = min(self.hw[0] / h, self.hw[1] / w)
        nh, nw = round(h * r), round(w * r)
        top, left = ((0, 0) if inp.align == "top_left"
                     else ((self.hw[0] - nh) // 2, (self.hw[1] - nw) // 2))
        canvas = np.full((*self.hw, 3), inp.pad_value, np.uint8)
        canvas[top:top + nh, left:left + nw] = cv2.resize(image, (nw, nh),
                                                          interpolation=cv2.INTER_LINEAR)
        if inp.color == "rgb":
            canvas = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
        x = (canvas.astype(np.float32) * inp.scale - np.float32(inp.mean)) / np.float32(inp.std)
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), r, left, top

    def decode(self, out: np.ndarray, r: float, left: float, top: float) -> list:
        m = self.cfg.model
        if m.family == "yolov8":
            rows = out[0].T
            cls = rows[:, 4:]
            boxes = rows[:, :4]
        else:
            rows = out[0].copy()
            rows[:, :2] = (rows[:, :2] + self.cells) * self.steps
            rows[:, 2:4] = np.exp(rows[:, 2:4]) * self.steps
            cls = rows[:, 5:] * rows[:, 4:5]
            boxes = rows[:, :4]
        ids = cls.argmax(1)
        scores = cls[np.arange(len(ids)), ids]
        keep = scores >= m.conf
        boxes, scores, ids = boxes[keep], scores[keep], ids[keep]
        xywh = np.column_stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2,
                                boxes[:, 2], boxes[:, 3]])
        picked = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), ids.tolist(),
                                         m.conf, m.iou)[:m.max_det] if len(scores) else []
        return [((xywh[i, 0] - left) / r, (xywh[i, 1] - top) / r, xywh[i, 2] / r,
                 xywh[i, 3] / r, float(scores[i]), int(ids[i])) for i in picked]

    def step(self) -> list:
        """One frame end to end; `last_capture_s` says what its read and decode cost."""
        t0 = time.perf_counter()
        image = self.read()
        self.last_capture_s = time.perf_counter() - t0
        x, r, left, top = self.preprocess(image)
        out = self.session.run(None, {self.input_name: x})[0]
        return self.decode(out, r, left, top)

    def close(self) -> None:
        self.cap.release()
