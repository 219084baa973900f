"""The geometry of resize modes, shared by preprocessing and by box decoding on the way back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Transform:
    """How frame pixels map into the model input: input = frame * scale + offset (per axis).

    Computed once per frame size, so decoders map boxes back without re-deriving geometry.
    `crop` is the frame region (x, y, w, h) that is resized; the rest of the frame is unused.
    """

    frame_hw: tuple[int, int]
    input_hw: tuple[int, int]
    resized_hw: tuple[int, int]   # size of the resized crop inside the input
    crop: tuple[int, int, int, int]
    pad_xy: tuple[int, int]       # where the resized crop starts in the input
    scale_xy: tuple[float, float]

    def to_frame(self, boxes: np.ndarray) -> None:
        """Map (N, 4) x1, y1, x2, y2 boxes from input pixels to frame pixels, in place, clipped."""
        self._map(boxes[:, 0::2], boxes[:, 1::2])

    def points_to_frame(self, points: np.ndarray) -> None:
        """Map (..., 2) x, y points (keypoints) as `to_frame` maps box corners, in place."""
        self._map(points[..., 0], points[..., 1])

    def _map(self, xs: np.ndarray, ys: np.ndarray) -> None:
        """Views of x and y coordinates: one mapping for box corners and keypoints alike."""
        sx, sy = self.scale_xy
        xs -= self.pad_xy[0]
        ys -= self.pad_xy[1]
        xs /= sx
        ys /= sy
        xs += self.crop[0]
        ys += self.crop[1]
        np.clip(xs, 0, self.frame_hw[1], out=xs)
        np.clip(ys, 0, self.frame_hw[0], out=ys)


def plan_transform(frame_hw: tuple[int, int], input_hw: tuple[int, int], resize: str,
                   crop_fraction: float = 0.875, align: str = "center") -> Transform:
    fh, fw = frame_hw
    ih, iw = input_hw
    if resize == "stretch":
        return Transform(frame_hw, input_hw, (ih, iw), (0, 0, fw, fh), (0, 0), (iw / fw, ih / fh))
    if resize == "letterbox":
        s = min(ih / fh, iw / fw)
        nh, nw = min(ih, round(fh * s)), min(iw, round(fw * s))
        if align == "center":
            pad = ((iw - nw) // 2, (ih - nh) // 2)
        else:
            pad = (0, 0)
        return Transform(frame_hw, input_hw, (nh, nw), (0, 0, fw, fh), pad, (nw / fw, nh / fh))
    if resize == "center_crop":
        # Shorter side to size / crop_fraction, then the centre crop of the input size: the
        # torchvision "resize 256, crop 224" recipe expressed on the frame instead.
        s = max(ih, iw) / crop_fraction / min(fh, fw)
        cw, ch = max(1, min(fw, round(iw / s))), max(1, min(fh, round(ih / s)))
        x0, y0 = (fw - cw) // 2, (fh - ch) // 2
        return Transform(frame_hw, input_hw, (ih, iw), (x0, y0, cw, ch), (0, 0), (iw / cw, ih / ch))
    raise ValueError(f"unknown resize mode {resize!r}")
