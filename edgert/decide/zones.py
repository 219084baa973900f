"""Zones in frame pixels and the anchor point of a box that must lie inside them."""

from __future__ import annotations

from typing import Sequence

from edgert.config.types import Zone

Poly = Sequence[tuple[float, float]]


class ZoneGeometry:
    """A zone's polygon resolved to pixels for one frame size (fractions scale with the frame)."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self._hw: tuple[int, int] | None = None
        self._poly: Poly = zone.polygon

    def _resolve(self, frame_hw: tuple[int, int]) -> Poly:
        if self._hw != frame_hw:
            h, w = frame_hw
            poly = self.zone.polygon
            if self.zone.fractional:
                poly = tuple((x * w, y * h) for x, y in poly)
            self._hw, self._poly = frame_hw, poly
        return self._poly

    def pixels(self, frame_hw: tuple[int, int]) -> Poly:
        """The polygon in pixels at this frame size (for drawing it)."""
        return self._resolve(frame_hw)

    def anchor(self, box: Sequence[float]) -> tuple[float, float]:
        """Bottom centre is where a person or a part touches the floor or the belt."""
        x = (box[0] + box[2]) / 2
        y = box[3] if self.zone.anchor == "bottom_center" else (box[1] + box[3]) / 2
        return x, y

    def inside(self, box: Sequence[float], frame_hw: tuple[int, int]) -> bool:
        """Whether the box's anchor lies in the zone at this frame size."""
        return point_in_polygon(self.anchor(box), self._resolve(frame_hw))


def point_in_polygon(pt: tuple[float, float], poly: Poly) -> bool:
    """Even-odd rule; a point on an edge counts as inside (hand-drawn zones have fuzzy edges)."""
    px, py = pt
    inside = False
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        cross = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
        if (abs(cross) <= 1e-9 * max(1.0, abs(x2 - x1) + abs(y2 - y1))
                and min(x1, x2) <= px <= max(x1, x2) and min(y1, y2) <= py <= max(y1, y2)):
            return True
        if (y1 > py) != (y2 > py) and px < x1 + (py - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside
