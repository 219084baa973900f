"""Plane geometry that config validation and the rules share, kept free of edgert imports."""

from __future__ import annotations

from typing import Sequence

import numpy as np

Poly = Sequence[tuple[float, float]]


def polygon_area(poly: Poly) -> float:
    """Signed area by the shoelace formula (positive counter-clockwise in y-up coordinates)."""
    n = len(poly)
    return 0.5 * sum(poly[i][0] * poly[(i + 1) % n][1] - poly[(i + 1) % n][0] * poly[i][1]
                     for i in range(n))


def line_axis(p1: tuple[float, float], p2: tuple[float, float]) -> str:
    """`horizontal` when crossings go left/right (a line more upright than flat), else `vertical`."""
    return "horizontal" if abs(p2[1] - p1[1]) >= abs(p2[0] - p1[0]) else "vertical"


def _orient(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def segments_cross(a, b, c, d) -> bool:
    """Proper or touching intersection of segments ab and cd."""
    o1, o2, o3, o4 = _orient(a, b, c), _orient(a, b, d), _orient(c, d, a), _orient(c, d, b)
    if ((o1 > 0) != (o2 > 0) and o1 != 0 and o2 != 0
            and (o3 > 0) != (o4 > 0) and o3 != 0 and o4 != 0):
        return True

    def on(p, q, r) -> bool:   # r collinear with pq and within its box
        return (_orient(p, q, r) == 0 and min(p[0], q[0]) <= r[0] <= max(p[0], q[0])
                and min(p[1], q[1]) <= r[1] <= max(p[1], q[1]))
    return on(a, b, c) or on(a, b, d) or on(c, d, a) or on(c, d, b)


def self_intersects(poly: Poly) -> bool:
    """Whether two edges that are not neighbours meet (a bow-tie, or a corner visited twice)."""
    n = len(poly)
    edges = [(poly[i], poly[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue   # neighbours share a corner by construction
            if segments_cross(*edges[i], *edges[j]):
                return True
    return False


def clip_area(poly: Poly, box: Sequence[float]) -> float:
    """Area of the polygon inside an axis-aligned box (Sutherland–Hodgman against the box)."""
    x1, y1, x2, y2 = box
    pts = list(poly)
    for axis, bound, keep_low in ((0, x1, False), (0, x2, True), (1, y1, False), (1, y2, True)):
        if not pts:
            return 0.0
        out = []
        for i in range(len(pts)):
            p, q = pts[i - 1], pts[i]
            p_in = p[axis] <= bound if keep_low else p[axis] >= bound
            q_in = q[axis] <= bound if keep_low else q[axis] >= bound
            if q_in != p_in:
                t = (bound - p[axis]) / (q[axis] - p[axis])
                cut = (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))
                out.append(cut)
            if q_in:
                out.append(q)
        pts = out
    return abs(polygon_area(pts)) if len(pts) >= 3 else 0.0


def points_in_polygon_np(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """(N, 2) points against an (M, 2) polygon, even-odd rule: the numpy twin of the kernel."""
    px, py = pts[:, 0], pts[:, 1]
    inside = np.zeros(len(pts), np.bool_)
    m = len(poly)
    for i in range(m):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % m]
        if y1 != y2:
            straddle = (y1 > py) != (y2 > py)
            xs = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
            inside ^= straddle & (px < xs)
    return inside | _on_edges_np(px, py, poly)


def _on_edges_np(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    on = np.zeros(len(px), np.bool_)
    m = len(poly)
    for i in range(m):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % m]
        cross = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
        on |= ((np.abs(cross) <= 1e-9 * max(1.0, abs(x2 - x1) + abs(y2 - y1)))
               & (px >= min(x1, x2)) & (px <= max(x1, x2))
               & (py >= min(y1, y2)) & (py <= max(y1, y2)))
    return on
