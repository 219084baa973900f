"""Line crossings of tracked objects, counted per direction (supervision's LineZone, by track)."""

from __future__ import annotations

from edgert.decide.zones import LineGeometry, line_axis

_DEAD_BAND_PX = 2.0   # an anchor this close to the line keeps its old side: no jitter counts


class LineCounter:
    """Remembers which side of the line each track was last clearly on; a flip is a crossing."""

    def __init__(self, geo: LineGeometry) -> None:
        self.geo = geo
        self.side: dict[int, int] = {}
        self.counts: dict[str, int] = {}

    def step(self, frame_hw: tuple[int, int], tracks: list[tuple[int, tuple[float, ...]]],
             ended: list[int]) -> list[tuple[int, str]]:
        """(track id, direction) for each track whose anchor crossed the segment this frame."""
        (x1, y1), (x2, y2) = self.geo.resolve(frame_hw)
        dx, dy = x2 - x1, y2 - y1
        length = (dx * dx + dy * dy) ** 0.5
        axis = line_axis((x1, y1), (x2, y2))
        bottom = self.geo.line.anchor == "bottom_center"
        out = []
        for tid, box in tracks:
            px = (box[0] + box[2]) * 0.5
            py = box[3] if bottom else (box[1] + box[3]) * 0.5
            along = ((px - x1) * dx + (py - y1) * dy) / (length * length)
            if not 0.0 <= along <= 1.0:
                self.side.pop(tid, None)   # beside the segment, not across it: forget the side
                continue
            dist = (dx * (py - y1) - dy * (px - x1)) / length
            if abs(dist) < _DEAD_BAND_PX:
                continue
            side = 1 if dist > 0 else -1
            before = self.side.get(tid)
            self.side[tid] = side
            if before is None or before == side:
                continue
            # The normal (-dy, dx) points to side +1: the move went along it or against it.
            nx, ny = (-dy * side, dx * side)
            if axis == "horizontal":
                direction = "left_to_right" if nx > 0 else "right_to_left"
            else:
                direction = "top_to_bottom" if ny > 0 else "bottom_to_top"
            self.counts[direction] = self.counts.get(direction, 0) + 1
            out.append((tid, direction))
        for tid in ended:
            self.side.pop(tid, None)
        return out
