"""YOLOv8 decode and class-aware NMS in numba: one pass to candidates, greedy NMS, buffers reused.

`YoloV8Kernel` is the drop-in twin of `YoloV8Decoder` (families.py). Overlap is computed with
OpenCV's own arithmetic (NMSBoxesBatched on Rect2d: class offset, no +1 on widths, IoU in double,
`1.f - float(1 - IoU) > iou` suppresses), so same-class decisions are bit-identical. Deliberate
differences from `nms_class_aware`, each a defect of the OpenCV path:

* `max_det` caps the boxes *kept*. NMSBoxesBatched's `top_k` cuts the candidate list to the
  `max_det` best scores *before* suppression, so the reference can return fewer boxes than
  it should when more than `max_det` candidates pass `conf`.
* Boxes of different classes never suppress each other. OpenCV separates classes by shifting
  boxes by class_id * (max coordinate + 1), which fails for boxes with negative coordinates.
* Two zero-area boxes do not suppress each other (OpenCV treats their 0/0 IoU as 1).

(Also: a NaN class score is skipped when picking an anchor's best class; numpy's argmax picks
the NaN and drops the anchor. Only a broken model emits NaN.)
"""

from __future__ import annotations

from typing import Sequence

import numba
import numpy as np
from numba import types as nt

from edgert import kernel_cache
from edgert.frame import Detections
from edgert.preprocess.transform import Transform

_JIT = kernel_cache.jit_options()   # before the first decorator: it picks the cache folder
_EPS = float(np.finfo(np.float64).eps)


def _ro(dtype: nt.Type, ndim: int) -> nt.Array:
    """A read-only C array type: accepts writable arrays too; the kernels never write inputs."""
    return nt.Array(dtype, ndim, "C", readonly=True)


@numba.njit(nt.int64(_ro(nt.float32, 2), nt.float32, nt.float32[::1], nt.float32[::1],
                     nt.int32[::1], nt.int64[::1], nt.float32[:, ::1]), **_JIT)
def decode_yolov8(pred, conf, best, scores, class_ids, anchors, boxes):  # pragma: no cover
    """(4+nc, N) cx, cy, w, h, class scores → candidates whose best score ≥ conf, anchor order.

    Writes scores, class ids (first class at the maximum, like argmax), anchor indices and
    x1, y1, x2, y2 boxes (float32 arithmetic, as the numpy decoder) into the first n rows of
    the output buffers (capacity N each) and returns n. `best` is (N,) scratch.
    """
    nc = pred.shape[0] - 4
    n_anchors = pred.shape[1]
    first = pred[4]
    for i in range(n_anchors):
        best[i] = first[i]
    for c in range(1, nc):               # row by row: contiguous, vectorised
        row = pred[4 + c]
        for i in range(n_anchors):
            v = row[i]
            if v > best[i]:
                best[i] = v
    half = np.float32(2.0)
    n = 0
    for i in range(n_anchors):
        s = best[i]
        if s >= conf:
            c = 0
            while pred[4 + c, i] != s:
                c += 1
            cx, cy, hw, hh = pred[0, i], pred[1, i], pred[2, i] / half, pred[3, i] / half
            boxes[n, 0] = cx - hw
            boxes[n, 1] = cy - hh
            boxes[n, 2] = cx + hw
            boxes[n, 3] = cy + hh
            scores[n] = s
            class_ids[n] = c
            anchors[n] = i
            n += 1
    return n


@numba.njit(nt.void(_ro(nt.float32, 1), nt.int64[::1], nt.int64[::1], nt.int64), **_JIT)
def _argsort_desc(keys, idx, tmp, n):  # pragma: no cover - compiled
    """Stable bottom-up merge sort of idx[:n] by keys[idx] descending (std::stable_sort order)."""
    src, dst = idx, tmp
    width = 1
    swapped = False
    while width < n:
        for lo in range(0, n, 2 * width):
            mid, hi = min(lo + width, n), min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if keys[src[j]] > keys[src[i]]:
                    dst[k] = src[j]
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
                k += 1
            while i < mid:
                dst[k] = src[i]
                i += 1
                k += 1
            while j < hi:
                dst[k] = src[j]
                j += 1
                k += 1
        src, dst = dst, src
        swapped = not swapped
        width *= 2
    if swapped:
        for i in range(n):
            idx[i] = tmp[i]


@numba.njit(nt.float32(*[nt.float64] * 8), **_JIT)
def _overlap(ax, ay, aw, ah, bx, by, bw, bh):  # pragma: no cover - compiled
    """OpenCV's rectOverlap on Rect2d a, b (x, y, w, h): 1.f - float(jaccardDistance(a, b)),
    with its intersection arithmetic (operator&=) so the rounding is the same."""
    area_a, area_b = aw * ah, bw * bh
    if area_a + area_b <= _EPS:
        return np.float32(0.0)           # OpenCV: 1.0; see the module docstring
    inter = 0.0
    if aw > 0 and ah > 0 and bw > 0 and bh > 0:
        x0, w0, x1, w1 = (ax, aw, bx, bw) if ax < bx else (bx, bw, ax, aw)
        y0, h0, y1, h1 = (ay, ah, by, bh) if ay < by else (by, bh, ay, ah)
        if not ((x0 < 0 and x0 + w0 < x1) or (y0 < 0 and y0 + h0 < y1)):
            iw = min(w0 - (x1 - x0), w1)
            ih = min(h0 - (y1 - y0), h1)
            if iw > 0 and ih > 0:
                inter = iw * ih
    distance = 1.0 - inter / (area_a + area_b - inter)
    return np.float32(1.0) - np.float32(distance)


@numba.njit(nt.int64(_ro(nt.float32, 2), _ro(nt.float32, 1), _ro(nt.int32, 1), nt.int64,
                     nt.float32, nt.int64, nt.int64[::1], nt.int64[::1], nt.float64[:, ::1],
                     nt.int64[::1]), **_JIT)
def nms_class_aware_into(boxes, scores, class_ids, n, iou, max_det, order, tmp, rects,
                         keep):  # pragma: no cover - compiled
    """Greedy class-aware NMS over the first n candidates; returns k and writes keep[:k].

    Candidates with score > 0 (OpenCV's threshold) are visited by score, descending, ties in
    index order; one is kept unless a kept box of its class overlaps it by more than `iou`.
    Stops at max_det kept. order, tmp (n,) int64 and rects (n, 4) float64 are scratch.
    """
    # Rect2d as NMSBoxesBatched builds it: x, y and float32 width/height, shifted by
    # class_id * (max coordinate + 1) so same-class arithmetic rounds exactly as OpenCV's.
    max_coord = 0.0
    for i in range(n):
        x, y = np.float64(boxes[i, 0]), np.float64(boxes[i, 1])
        w, h = np.float64(boxes[i, 2] - boxes[i, 0]), np.float64(boxes[i, 3] - boxes[i, 1])
        rects[i, 0], rects[i, 1], rects[i, 2], rects[i, 3] = x, y, w, h
        max_coord = max(max_coord, x, y, x + w, y + h)
    m = 0
    for i in range(n):
        offset = class_ids[i] * (max_coord + 1.0)
        rects[i, 0] += offset
        rects[i, 1] += offset
        if scores[i] > 0:
            order[m] = i
            m += 1
    _argsort_desc(scores, order, tmp, m)
    k = 0
    for t in range(m):
        if k >= max_det:
            break
        i = order[t]
        c = class_ids[i]
        ax, ay, aw, ah = rects[i, 0], rects[i, 1], rects[i, 2], rects[i, 3]
        suppressed = False
        for q in range(k):
            j = keep[q]
            if class_ids[j] == c and _overlap(ax, ay, aw, ah, rects[j, 0], rects[j, 1],
                                              rects[j, 2], rects[j, 3]) > iou:
                suppressed = True
                break
        if not suppressed:
            keep[k] = i
            k += 1
    return k


@numba.njit(nt.int64(nt.int64[::1], nt.int64, _ro(nt.float32, 2), _ro(nt.float32, 1),
                     _ro(nt.int32, 1), _ro(nt.float32, 1), nt.float32[:, ::1], nt.float32[::1],
                     nt.int32[::1]), **_JIT)
def gather_to_frame(keep, k, boxes, scores, class_ids, geometry, out_boxes, out_scores,
                    out_ids):  # pragma: no cover - compiled
    """The kept candidates, mapped from input to frame pixels and clipped, into the outputs
    (capacity ≥ k); a box or score that is not finite (a broken model) is left out. Returns
    how many were written. `geometry`: pad x, pad y, scale x, scale y, crop x, crop y,
    frame width, frame height — `Transform.to_frame` in one pass, without numpy's per-call cost,
    in the same float32 arithmetic, so the boxes are identical.
    """
    zero = np.float32(0.0)
    px, py, sx, sy, cx, cy, fw, fh = (geometry[0], geometry[1], geometry[2], geometry[3],
                                      geometry[4], geometry[5], geometry[6], geometry[7])
    m = 0
    for j in range(k):
        i = keep[j]
        s = scores[i]
        x1 = (boxes[i, 0] - px) / sx + cx
        y1 = (boxes[i, 1] - py) / sy + cy
        x2 = (boxes[i, 2] - px) / sx + cx
        y2 = (boxes[i, 3] - py) / sy + cy
        if not (np.isfinite(s) and np.isfinite(x1) and np.isfinite(y1) and np.isfinite(x2)
                and np.isfinite(y2)):
            continue
        out_boxes[m, 0] = min(max(x1, zero), fw)
        out_boxes[m, 1] = min(max(y1, zero), fh)
        out_boxes[m, 2] = min(max(x2, zero), fw)
        out_boxes[m, 3] = min(max(y2, zero), fh)
        out_scores[m] = s
        out_ids[m] = class_ids[i]
        m += 1
    return m


def kernels_from_cache() -> bool:
    """True if every compiled signature was loaded from numba's on-disk cache (no compile paid)."""
    fns = (decode_yolov8, _argsort_desc, _overlap, nms_class_aware_into, gather_to_frame)
    return all(not f.stats.cache_misses and sum(f.stats.cache_hits.values()) == len(f.signatures)
               for f in fns)


def nms_class_aware_numba(boxes_xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                          iou: float, max_det: int) -> np.ndarray:
    """`nms_class_aware` with the kernel (allocates its scratch; the decoder reuses its own)."""
    n = scores.shape[0]
    keep = np.empty(n, np.int64)
    k = nms_class_aware_into(np.ascontiguousarray(boxes_xyxy, np.float32),
                             np.ascontiguousarray(scores, np.float32),
                             np.ascontiguousarray(class_ids, np.int32), n, np.float32(iou),
                             max_det, np.empty(n, np.int64), np.empty(n, np.int64),
                             np.empty((n, 4), np.float64), keep)
    return keep[:k].copy()


class YoloV8Kernel:
    """Drop-in for `YoloV8Decoder`: [1, 4+nc, N] → Detections, via the numba kernels above.

    Buffers for `anchors` anchors are allocated here and reused; an output with more anchors
    grows them once. The returned Detections own their (small) arrays.
    """

    outputs_finite = True   # non-finite boxes and scores are dropped in `gather_to_frame`

    def __init__(self, labels: tuple[str, ...], output_index: int, conf: float, iou: float,
                 max_det: int, anchors: int = 8400) -> None:
        self.labels, self.index = labels, output_index
        self.conf, self.iou, self.max_det = conf, iou, max_det
        # The numpy decoder compares float32 scores with conf as float32 (NEP 50), and OpenCV
        # takes the IoU threshold as float.
        self._conf32, self._iou32 = np.float32(conf), np.float32(iou)
        self._transform: Transform | None = None
        self._geometry = np.zeros(8, np.float32)
        self._allocate(anchors)

    def _allocate(self, anchors: int) -> None:
        self.capacity = anchors
        self._best = np.empty(anchors, np.float32)
        self._scores = np.empty(anchors, np.float32)
        self._class_ids = np.empty(anchors, np.int32)
        self._anchors = np.empty(anchors, np.int64)
        self._boxes = np.empty((anchors, 4), np.float32)
        self._order = np.empty(anchors, np.int64)
        self._tmp = np.empty(anchors, np.int64)
        self._rects = np.empty((anchors, 4), np.float64)
        self._keep = np.empty(anchors, np.int64)

    def warm_up(self, classes: int) -> None:
        """Run both kernels once on an all-zero output (they compiled when this module loaded)."""
        pred = np.zeros((4 + classes, self.capacity), np.float32)
        n = decode_yolov8(pred, self._conf32, self._best, self._scores, self._class_ids,
                          self._anchors, self._boxes)
        nms_class_aware_into(self._boxes, self._scores, self._class_ids, n, self._iou32,
                             self.max_det, self._order, self._tmp, self._rects, self._keep)

    def __call__(self, outputs: Sequence[np.ndarray], transform: Transform) -> Detections:
        pred = outputs[self.index][0]
        if pred.ndim != 2 or pred.shape[0] < 5:
            raise ValueError(f"yolov8 output: expected [1, 4+classes, anchors], got "
                             f"{outputs[self.index].shape}")
        if pred.dtype != np.float32 or not pred.flags.c_contiguous:
            pred = np.ascontiguousarray(pred, np.float32)
        if pred.shape[1] > self.capacity:
            self._allocate(pred.shape[1])
        n = decode_yolov8(pred, self._conf32, self._best, self._scores, self._class_ids,
                          self._anchors, self._boxes)
        k = nms_class_aware_into(self._boxes, self._scores, self._class_ids, n, self._iou32,
                                 self.max_det, self._order, self._tmp, self._rects, self._keep)
        if k == 0:
            return Detections.empty(self.labels)
        if transform is not self._transform:   # a new frame size: once per size, not per frame
            self._transform = transform
            self._geometry = np.array([*transform.pad_xy, *transform.scale_xy, *transform.crop[:2],
                                       transform.frame_hw[1], transform.frame_hw[0]], np.float32)
        boxes, scores = np.empty((k, 4), np.float32), np.empty(k, np.float32)
        ids = np.empty(k, np.int32)
        m = gather_to_frame(self._keep, k, self._boxes, self._scores, self._class_ids,
                            self._geometry, boxes, scores, ids)
        if m < k:
            boxes, scores, ids = boxes[:m], scores[:m], ids[:m]
        return Detections(boxes, scores, ids, self.labels)
