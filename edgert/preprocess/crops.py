"""Crops of the primary's detections, cut, resized and scaled in one numba pass per crop,
straight from the frame into a preallocated batch tensor: no copy of the frame, no copy of the
crop, nothing allocated per frame.

Bilinear with half-pixel centres as cv2.INTER_LINEAR; values are rounded to a grey level
before the per-channel table (scale, mean, std, dtype), as a uint8 resize would be.
"""

from __future__ import annotations

import numba
import numpy as np

from edgert import kernel_cache
from edgert.config.types import InputConfig

_JIT = kernel_cache.jit_options()


@numba.njit(**_JIT)
def _taps(start, step, i, n):  # pragma: no cover - compiled
    """Output index i → the two source indices it blends (half-pixel centres) and the weight
    of the second, clamped to the frame."""
    f = min(max(start + (i + 0.5) * step - 0.5, 0.0), n - 1.0)
    a = int(f)
    return a, min(a + 1, n - 1), f - a


@numba.njit(**_JIT)
def crop_into(img, x0, y0, x1, y1, out, chan, lut, top, left, ih, iw, fill):  # pragma: no cover
    """img[y0:y1, x0:x1] (float edges, frame pixels) resized to ih × iw and written to
    out[:, top:top+ih, left:left+iw]; plane k of `out` takes source channel chan[k] through
    lut[k]. The rest of `out` gets fill[k] (letterbox bars)."""
    h, w = img.shape[0], img.shape[1]
    oh, ow = out.shape[1], out.shape[2]
    if ih != oh or iw != ow:
        for k in range(3):
            for y in range(oh):
                for x in range(ow):
                    out[k, y, x] = fill[k]
    sy = (y1 - y0) / ih
    sx = (x1 - x0) / iw
    for y in range(ih):
        ya, yb, wy = _taps(y0, sy, y, h)
        for x in range(iw):
            xa, xb, wx = _taps(x0, sx, x, w)
            for k in range(3):
                c = chan[k]
                top_v = img[ya, xa, c] * (1.0 - wx) + img[ya, xb, c] * wx
                bot_v = img[yb, xa, c] * (1.0 - wx) + img[yb, xb, c] * wx
                v = int(top_v * (1.0 - wy) + bot_v * wy + 0.5)
                out[k, top + y, left + x] = lut[k, v]


class CropPreprocessor:
    """Detections' boxes → a (n, 3, H, W) or (n, H, W, 3) batch, padded and clipped to the frame."""

    def __init__(self, cfg: InputConfig, input_hw: tuple[int, int], dtype: np.dtype,
                 batch: int, padding: float, channels_last: bool = False) -> None:
        self.cfg, self.input_hw, self.padding = cfg, input_hw, padding
        self.dtype = np.dtype(dtype)
        h, w = input_hw
        shape = (batch, h, w, 3) if channels_last else (batch, 3, h, w)
        self.tensor = np.zeros(shape, self.dtype)
        # Each crop's planes as a (3, H, W) view, made once: NHWC is the same memory, strided.
        self._planes = [self.tensor[i].transpose(2, 0, 1) if channels_last else self.tensor[i]
                        for i in range(batch)]
        self._chan = np.array([2, 1, 0] if cfg.color == "rgb" else [0, 1, 2], np.int64)
        grey = np.arange(256, dtype=np.float64)
        std, mean = np.asarray(cfg.std, np.float64), np.asarray(cfg.mean, np.float64)
        table = (grey[None, :] * cfg.scale - mean[:, None]) / std[:, None]
        if self.dtype.kind != "f":
            table = np.clip(np.rint(table), np.iinfo(self.dtype).min, np.iinfo(self.dtype).max)
        self._lut = np.ascontiguousarray(table.astype(self.dtype))
        self._fill = np.ascontiguousarray(self._lut[np.arange(3), cfg.pad_value])
        # Per slot, how input pixels map back: frame = origin + (input - offset) * scale.
        self._back = np.zeros((batch, 6), np.float64)

    def box(self, box: np.ndarray, frame_hw: tuple[int, int]) -> tuple[float, float, float, float]:
        """The padded crop of `box` (x1, y1, x2, y2), clipped to the frame."""
        x1, y1, x2, y2 = (float(v) for v in box)
        px, py = (x2 - x1) * self.padding, (y2 - y1) * self.padding
        if self.cfg.resize == "center_crop":
            f = self.cfg.crop_fraction
            px, py = px - (x2 - x1) * (1 - f) / 2, py - (y2 - y1) * (1 - f) / 2
        h, w = frame_hw
        return (max(0.0, x1 - px), max(0.0, y1 - py), min(float(w), x2 + px),
                min(float(h), y2 + py))

    def write(self, i: int, image: np.ndarray, crop: tuple[float, float, float, float]) -> None:
        """Crop `crop` of `image` (H, W, 3 uint8) into slot `i` of the batch."""
        x0, y0, x1, y1 = crop
        h, w = self.input_hw
        top = left = 0
        ih, iw = h, w
        if self.cfg.resize == "letterbox":
            r = min(h / max(y1 - y0, 1.0), w / max(x1 - x0, 1.0))
            ih, iw = max(1, min(h, round((y1 - y0) * r))), max(1, min(w, round((x1 - x0) * r)))
            if self.cfg.align == "center":
                top, left = (h - ih) // 2, (w - iw) // 2
        x1, y1 = max(x1, x0 + 1.0), max(y1, y0 + 1.0)
        crop_into(image, x0, y0, x1, y1, self._planes[i], self._chan, self._lut, top, left, ih,
                  iw, self._fill)
        self._back[i] = (x0, y0, left, top, (x1 - x0) / iw, (y1 - y0) / ih)

    def to_frame(self, i: int, points: np.ndarray) -> np.ndarray:
        """Points (..., 2+) in slot i's input pixels → frame pixels (extra columns kept)."""
        x0, y0, left, top, sx, sy = self._back[i]
        out = np.array(points, np.float64, copy=True)
        out[..., 0] = x0 + (out[..., 0] - left) * sx
        out[..., 1] = y0 + (out[..., 1] - top) * sy
        return out
