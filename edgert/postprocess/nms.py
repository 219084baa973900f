"""Class-aware non-maximum suppression: the plain OpenCV version every faster one is checked against."""

from __future__ import annotations

import cv2
import numpy as np


def nms_class_aware(boxes_xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                    iou: float, max_det: int) -> np.ndarray:
    """Indices kept, highest score first. Boxes of different classes never suppress each other."""
    if scores.shape[0] == 0:
        return np.zeros(0, np.int64)
    xywh = boxes_xyxy.copy()
    xywh[:, 2:] -= xywh[:, :2]
    # top_k=0: OpenCV's top_k cuts candidates *before* suppression, which would return
    # fewer than max_det boxes; the slice below caps what is kept instead.
    keep = cv2.dnn.NMSBoxesBatched(xywh, scores, class_ids, 0.0, iou, top_k=0)
    keep = np.asarray(keep, np.int64).reshape(-1)
    return keep[np.argsort(-scores[keep], kind="stable")][:max_det]
