"""Zones and lines in frame pixels, and which boxes are in a zone (anchor point or overlap)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgert.config.types import Config, Line, Zone
from edgert.decide import kernels
from edgert.geometry import clip_area, line_axis  # noqa: F401 (re-exported)
from edgert.errors import ConfigError

Poly = Sequence[tuple[float, float]]


def _scale(points: Poly, fractional: bool, frame_hw: tuple[int, int]) -> tuple[tuple[float, float], ...]:
    h, w = frame_hw
    return tuple((x * w, y * h) for x, y in points) if fractional else tuple(points)


class ZoneGeometry:
    """A zone's polygon resolved to pixels for one frame size (fractions scale with the frame)."""

    def __init__(self, zone: Zone, kernels_impl: str = "numba") -> None:
        self.zone = zone
        self._hw: tuple[int, int] | None = None
        self._poly: Poly = zone.polygon
        self._arr = np.asarray(zone.polygon, np.float64)
        self._pip = (kernels.points_in_polygon if kernels_impl == "numba"
                     else kernels.points_in_polygon_ref)

    def _resolve(self, frame_hw: tuple[int, int]) -> Poly:
        if self._hw != frame_hw:
            self._poly = _scale(self.zone.polygon, self.zone.fractional, frame_hw)
            self._arr = np.ascontiguousarray(self._poly, np.float64)
            self._hw = frame_hw
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
        """Whether one box is in the zone at this frame size."""
        return bool(self.mask(np.asarray([box], np.float64), frame_hw, np.ones(1, np.bool_))[0])

    def mask(self, boxes: np.ndarray, frame_hw: tuple[int, int], want: np.ndarray) -> np.ndarray:
        """(N,) which boxes are in the zone; only rows in `want` are looked at (overlap costs)."""
        self._resolve(frame_hw)
        n = len(boxes)
        out = np.zeros(n, np.bool_)
        if not n:
            return out
        if self.zone.anchor == "overlap":
            for i in np.flatnonzero(want):
                b = boxes[i]
                area = (b[2] - b[0]) * (b[3] - b[1])
                out[i] = area > 0 and clip_area(self._poly, b) >= self.zone.overlap * area
            return out
        pts = np.empty((n, 2), np.float64)
        pts[:, 0] = (boxes[:, 0] + boxes[:, 2]) * 0.5
        pts[:, 1] = boxes[:, 3] if self.zone.anchor == "bottom_center" else (boxes[:, 1] + boxes[:, 3]) * 0.5
        self._pip(pts, self._arr, out)
        return out


class LineGeometry:
    """A line in pixels, and the image direction a crossing of it has (by its normal)."""

    def __init__(self, line: Line) -> None:
        self.line = line
        self._hw: tuple[int, int] | None = None

    def resolve(self, frame_hw: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
        if self._hw != frame_hw:
            self._p = _scale((self.line.p1, self.line.p2), self.line.fractional, frame_hw)
            self._hw = frame_hw
        return self._p[0], self._p[1]


def check_frame(cfg: Config, frame_hw: tuple[int, int], source_id: str | None = None) -> None:
    """Pixel zones and lines must lie in the frame; its size is known only at warm-up. With
    `source_id`, those that apply to that source, against its frame."""
    h, w = frame_hw
    mine = lambda x: source_id is None or not x.sources or source_id in x.sources  # noqa: E731
    items = [("zones", i, z.name, z.polygon, z.units) for i, z in enumerate(cfg.zones) if mine(z)]
    items += [("lines", i, ln.name, (ln.p1, ln.p2), ln.units) for i, ln in enumerate(cfg.lines)
              if mine(ln)]
    whose = f"source {source_id!r}'s" if cfg.named_sources and source_id else "the source's"
    for kind, i, name, points, units in items:
        if units != "pixels":
            continue
        for x, y in points:
            if x > w or y > h:
                key = "polygon" if kind == "zones" else "p1/p2"
                raise ConfigError(str(cfg.file), f"{kind}[{i}].{key}",
                                  f"of {kind[:-1]} {name!r} has the point [{x:g}, {y:g}], outside "
                                  f"{whose} {w}x{h} frame",
                                  f"give pixels within {w}x{h}, or fractions with units = "
                                  '"fraction"')
