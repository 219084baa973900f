"""A three-stage cascade as an edgert user stage: persons (the primary) → a face detector on
the head of each person → a classifier on each face found. The worked example of
docs/models.md ("A cascade of your own"); tests/test_user_stage.py runs it on real models.

    [model.stage]
    function = "face_cascade:cascade"            # this file's folder on PYTHONPATH
    options = { labels = "imagenet1000_simple_labels.txt", max_persons = 4 }
    [model.stage.sessions]
    faces = "ultraface_version-slim-320.onnx"    # [1, 3, 240, 320], RGB, (x - 127) / 128
    looks = "mobilenetv2-12-int8.onnx"           # [N, 3, 224, 224], ImageNet normalisation

Everything per frame goes through buffers made once (`CropPreprocessor`), and each session
is run only when its learned cost still fits before the deadline (`ctx.fits`): a person not
reached says so, and the record is never late.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgert.config.types import InputConfig
from edgert.frame import Detections
from edgert.infer.stage import StageContext
from edgert.preprocess.crops import CropPreprocessor
from edgert.records import Attr

FACES = InputConfig(resize="stretch", color="rgb", mean=(127.0,) * 3, std=(128.0,) * 3)
LOOKS = InputConfig(resize="stretch", color="rgb", scale=1 / 255, mean=(0.485, 0.456, 0.406),
                    std=(0.229, 0.224, 0.225))
NOT_REACHED = Attr("", -1, 0.0, "budget")


class FaceCascade:
    """Callable once per frame; its buffers are made on the first call (at warm-up)."""

    def __init__(self) -> None:
        self.faces: CropPreprocessor | None = None
        self.looks: CropPreprocessor | None = None
        self.labels: list[str] = []

    def _setup(self, ctx: StageContext) -> None:
        self.faces = CropPreprocessor(FACES, (240, 320), np.float32, 1, padding=0.0)
        self.looks = CropPreprocessor(LOOKS, (224, 224), np.float32, 1, padding=0.2)
        path = ctx.options.get("labels")
        self.labels = Path(path).read_text().splitlines() if path else []

    def __call__(self, ctx: StageContext) -> Detections | None:
        if self.faces is None:
            self._setup(ctx)
        det = ctx.detections
        if not len(det) or not det.has_boxes:
            return None
        hw = (ctx.frame.height, ctx.frame.width)
        attrs = list(det.attributes or (None,) * len(det))
        persons = [i for i in range(len(det)) if det.label(i) == "person" and det.scores[i] >= 0.5]
        for n, i in enumerate(persons):
            if n >= int(ctx.options.get("max_persons", 4)) or not ctx.fits("faces"):
                attrs[i] = {**(attrs[i] or {}), "face": NOT_REACHED}
                continue
            x1, y1, x2, y2 = (float(v) for v in det.boxes[i])
            head = (x1, y1, x2, y1 + 0.4 * (y2 - y1))   # faces are in the top of a person
            self.faces.write(0, ctx.image, head)
            scores, boxes = ctx.sessions["faces"].run(self.faces.tensor)
            best = int(np.argmax(scores[0, :, 1]))
            score = float(scores[0, best, 1])
            found = {"face": Attr("face", 0, round(score, 4), None if score >= 0.7 else "low_score")}
            if score >= 0.7:
                bx1, by1, bx2, by2 = boxes[0, best]
                w, h = head[2] - head[0], head[3] - head[1]
                face = np.array([head[0] + bx1 * w, head[1] + by1 * h,
                                 head[0] + bx2 * w, head[1] + by2 * h], np.float32)
                if ctx.fits("looks"):
                    self.looks.write(0, ctx.image, self.looks.box(face, hw))
                    logits = ctx.sessions["looks"].run(self.looks.tensor)[0][0]
                    c = int(np.argmax(logits))
                    p = np.exp(logits - logits.max())
                    label = self.labels[c] if c < len(self.labels) else str(c)
                    found["look"] = Attr(label, c, round(float(p[c] / p.sum()), 4))
                else:
                    found["look"] = NOT_REACHED
            attrs[i] = {**(attrs[i] or {}), **found}
        return Detections(det.boxes, det.scores, det.class_ids, det.labels, det.track_ids,
                          det.keypoints, tuple(attrs))


cascade = FaceCascade()
