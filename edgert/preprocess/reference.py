"""Preprocessing with OpenCV and numpy into preallocated buffers: correct, portable, the baseline."""

from __future__ import annotations

import cv2
import numpy as np

from edgert.config.types import InputConfig
from edgert.frame import Frame
from edgert.preprocess.transform import Transform, plan_transform


class ReferencePreprocessor:
    """Frame → (1, 3, H, W) tensor, or (1, H, W, 3) for `layout = "nhwc"`. Buffers are allocated
    for the first frame size and reused."""

    def __init__(self, cfg: InputConfig, input_hw: tuple[int, int], dtype: np.dtype) -> None:
        self.cfg, self.input_hw, self.dtype = cfg, input_hw, np.dtype(dtype)
        ih, iw = input_hw
        nhwc = cfg.layout == "nhwc"
        self.tensor = np.empty((1, ih, iw, 3) if nhwc else (1, 3, ih, iw), self.dtype)
        # Channel c of the model's input, whichever axis carries it.
        self._planes = [self.tensor[0, :, :, c] if nhwc else self.tensor[0, c] for c in range(3)]
        self._canvas = np.full((ih, iw, 3), cfg.pad_value, np.uint8)
        self._frame_hw: tuple[int, int] | None = None
        self._resized = self._canvas
        self.transform: Transform | None = None
        # (x * scale - mean) / std folded into one multiply-add per channel
        std = np.asarray(cfg.std, np.float64)
        gain = cfg.scale / std
        bias = -np.asarray(cfg.mean, np.float64) / std
        self._identity = bool(np.all(gain == 1.0) and np.all(bias == 0.0))
        per_channel = (3,) if nhwc else (3, 1, 1)   # broadcast along the channel axis
        self._gain = gain.astype(self.dtype if self.dtype.kind == "f" else np.float32
                                 ).reshape(per_channel)
        self._bias = bias.astype(self._gain.dtype).reshape(per_channel)
        self._channels = [2, 1, 0] if cfg.color == "rgb" else [0, 1, 2]

    def _plan(self, frame_hw: tuple[int, int]) -> Transform:
        t = plan_transform(frame_hw, self.input_hw, self.cfg.resize, self.cfg.crop_fraction,
                           self.cfg.align)
        self._frame_hw, self.transform = frame_hw, t
        self._canvas[:] = self.cfg.pad_value
        self._resized = np.empty((*t.resized_hw, 3), np.uint8)
        return t

    def __call__(self, frame: Frame) -> tuple[np.ndarray, Transform]:
        image = frame.image
        hw = (image.shape[0], image.shape[1])
        t = self.transform if hw == self._frame_hw and self.transform else self._plan(hw)
        x, y, w, h = t.crop
        src = image[y:y + h, x:x + w]
        rh, rw = t.resized_hw
        cv2.resize(src, (rw, rh), dst=self._resized, interpolation=cv2.INTER_LINEAR)
        px, py = t.pad_xy
        self._canvas[py:py + rh, px:px + rw] = self._resized
        # Channel reorder (and HWC→CHW) in one strided copy into the preallocated tensor.
        for dst_c, src_c in enumerate(self._channels):
            np.copyto(self._planes[dst_c], self._canvas[:, :, src_c], casting="unsafe")
        if self.dtype.kind == "f" and not self._identity:
            np.multiply(self.tensor[0], self._gain, out=self.tensor[0])
            np.add(self.tensor[0], self._bias, out=self.tensor[0])
        return self.tensor, t
