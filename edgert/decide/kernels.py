"""The decide stage's two hot loops in numba (points in zones, IoU matching), with numpy twins.

With 50 detections and a handful of zones, a numpy point-in-polygon costs ~15 array operations
per edge (~60 µs a zone); the kernel does it in ~1 µs. The twins are what tests compare against.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types as nt

from edgert import kernel_cache
from edgert.geometry import points_in_polygon_np

_JIT = kernel_cache.jit_options()
_RO2 = nt.Array(nt.float64, 2, "C", readonly=True)


@numba.njit(nt.void(_RO2, _RO2, nt.boolean[::1]), **_JIT)
def points_in_polygon(pts, poly, out):  # pragma: no cover - compiled
    """Even-odd rule; a point on an edge counts as inside. Writes (N,) into `out`."""
    m = poly.shape[0]
    for k in range(pts.shape[0]):
        px, py = pts[k, 0], pts[k, 1]
        inside = False
        edge = False
        for i in range(m):
            x1, y1 = poly[i, 0], poly[i, 1]
            j = i + 1 if i + 1 < m else 0
            x2, y2 = poly[j, 0], poly[j, 1]
            cross = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
            if (abs(cross) <= 1e-9 * max(1.0, abs(x2 - x1) + abs(y2 - y1))
                    and min(x1, x2) <= px <= max(x1, x2) and min(y1, y2) <= py <= max(y1, y2)):
                edge = True
                break
            if (y1 > py) != (y2 > py) and px < x1 + (py - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        out[k] = inside or edge


@numba.njit(nt.int64(_RO2, _RO2, nt.float64, nt.boolean[::1], nt.boolean[::1],
                     nt.int64[:, ::1]), **_JIT)
def greedy_iou_match(a, b, min_iou, a_free, b_free, pairs):  # pragma: no cover - compiled
    """Pairs rows of `a` (tracks) with rows of `b` (detections), highest IoU first, each at
    least `min_iou`, among rows still free (cleared as they pair). Writes (i, j) rows into
    `pairs` and returns how many."""
    na, nb = a.shape[0], b.shape[0]
    iou = np.zeros((na, nb))
    for i in range(na):
        if not a_free[i]:
            continue
        aa = (a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1])
        for j in range(nb):
            if not b_free[j]:
                continue
            w = min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0])
            h = min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1])
            if w > 0 and h > 0:
                inter = w * h
                union = aa + (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1]) - inter
                if union > 0:
                    iou[i, j] = inter / union
    n = 0
    while True:
        best, bi, bj = min_iou, -1, -1
        for i in range(na):
            if not a_free[i]:
                continue
            for j in range(nb):
                if b_free[j] and iou[i, j] >= best and (bi < 0 or iou[i, j] > best):
                    best, bi, bj = iou[i, j], i, j
        if bi < 0:
            return n
        a_free[bi] = False
        b_free[bj] = False
        pairs[n, 0], pairs[n, 1] = bi, bj
        n += 1


def iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(NA, 4) × (NB, 4) → (NA, NB) IoU."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def greedy_iou_match_np(a, b, min_iou, a_free, b_free, pairs) -> int:
    """The twin of `greedy_iou_match` (same ties: the first row, then the first column)."""
    iou = iou_np(a, b)
    iou[~a_free, :] = -1.0
    iou[:, ~b_free] = -1.0
    n = 0
    while iou.size:
        i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
        if iou[i, j] < min_iou or iou[i, j] < 0:
            return n
        a_free[i] = b_free[j] = False
        pairs[n] = (i, j)
        iou[i, :] = -1.0
        iou[:, j] = -1.0
        n += 1
    return n


def points_in_polygon_ref(pts: np.ndarray, poly: np.ndarray, out: np.ndarray) -> None:
    out[:] = points_in_polygon_np(pts, poly)


def warm() -> None:
    """Compile (or load from the cache) both kernels before the first decided frame."""
    box = np.array([[0.0, 0.0, 1.0, 1.0]])
    points_in_polygon(box[:, :2].copy(), np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]),
                      np.zeros(1, np.bool_))
    greedy_iou_match(box, box, 0.5, np.ones(1, np.bool_), np.ones(1, np.bool_),
                     np.zeros((1, 2), np.int64))
