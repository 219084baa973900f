"""Zones in frame pixels and the anchor point of a box that must lie inside them."""

from __future__ import annotations

import numpy as np

from edgert.config.types import Zone


class ZoneGeometry:
    """A zone's polygon resolved to pixels for one frame size (fractions scale with the frame)."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self._hw: tuple[int, int] | None = None
        self._poly = np.asarray(zone.polygon, np.float64)

    def _resolve(self, frame_hw: tuple[int, int]) -> np.ndarray:
        if self._hw != frame_hw:
            poly = np.asarray(self.zone.polygon, np.float64)
            if self.zone.fractional:
                poly = poly * np.array([frame_hw[1], frame_hw[0]], np.float64)
            self._hw, self._poly = frame_hw, poly
        return self._poly

    def anchors(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 2) points: bottom centre is where a person or a part touches the floor or belt."""
        x = (boxes[:, 0] + boxes[:, 2]) / 2
        y = boxes[:, 3] if self.zone.anchor == "bottom_center" else (boxes[:, 1] + boxes[:, 3]) / 2
        return np.stack([x, y], axis=1)

    def contains(self, boxes: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
        """(N,) bool: each box's anchor inside the polygon (even-odd rule; edges count inside)."""
        poly = self._resolve(frame_hw)
        pts = self.anchors(boxes)
        return points_in_polygon(pts, poly)


def points_in_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    inside = np.zeros(len(pts), bool)
    on_edge = np.zeros(len(pts), bool)
    px, py = pts[:, 0], pts[:, 1]
    n = len(poly)
    for i in range(n):
        (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % n]
        crosses = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < x_at)
        # A point exactly on an edge counts as inside: zones are drawn by hand, edges are fuzzy.
        cross = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
        within = ((np.minimum(x1, x2) <= px) & (px <= np.maximum(x1, x2))
                  & (np.minimum(y1, y2) <= py) & (py <= np.maximum(y1, y2)))
        on_edge |= within & (np.abs(cross) <= 1e-9 * max(1.0, abs(x2 - x1) + abs(y2 - y1)))
    return inside | on_edge
