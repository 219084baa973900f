"""Preprocessing in one numba pass: BGR frame → resized, padded, reordered, scaled CHW tensor.

Same interface and output as `ReferencePreprocessor` (bilinear matches cv2.INTER_LINEAR within
one grey level), but each output value is written once, straight from the source rows it needs.
The kernels compile for the one tensor dtype a preprocessor writes when it is built (from
numba's on-disk cache after the first run) — at start-up, before ready, so no frame ever pays
compilation, and a cold start compiles only what the model needs (a third of all signatures).
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba import types as nt

from edgert import kernel_cache
from edgert.config.types import InputConfig
from edgert.frame import Frame
from edgert.preprocess.transform import Transform, plan_transform

_JIT = kernel_cache.jit_options()   # before the first decorator: it picks the cache folder

_COEF_BITS = 11                       # OpenCV's INTER_RESIZE_COEF_BITS: weights are k / 2048
_COEF_SCALE = 1 << _COEF_BITS
_SHIFT = 2 * _COEF_BITS
_HALF = 1 << (_SHIFT - 1)

# The tensor dtypes we write; float16 is written through its uint16 bit pattern.
_STORAGE = {np.dtype(np.float32): np.float32, np.dtype(np.float16): np.uint16,
            np.dtype(np.uint8): np.uint8}


def _plane(out: nt.Type, planar: bool) -> nt.Type:
    """An output plane: a contiguous row of a CHW tensor, or every third value of an HWC one."""
    return out[:, ::1] if planar else out[:, :]


def _signature(out: nt.Type, planar: bool = True) -> nt.Type:
    u32_1d, u32_2d = nt.uint32[::1], nt.uint32[:, ::1]
    frame = nt.Array(nt.uint8, 2, "C", readonly=True)    # sources hand out read-only frames
    p = _plane(out, planar)
    return nt.void(frame, u32_2d, u32_2d, u32_1d, u32_1d, u32_1d, u32_1d, nt.boolean,
                   nt.int64, nt.int64, out[:, ::1], p, p, p, nt.int64, nt.int64, u32_1d)


@numba.njit(**_JIT)
def _gather_row(s, j0, j1, a0, a1, two_tap, half, shift, lut, ob, og, orr):  # pragma: no cover
    """Horizontal taps of one (blended or source) row, rounded, through the LUT into 3 planes.

    Compiled into `_resize_into` (for a uint8 source row and a uint32 blended row) when that
    compiles. Indices and weights are unsigned so numba emits no negative-index wraparound.
    """
    lb, lg, lr = lut[0], lut[1], lut[2]
    one, two = np.uint32(1), np.uint32(2)
    if two_tap:
        for x in range(j0.shape[0]):
            k0, k1, w0, w1 = j0[x], j1[x], a0[x], a1[x]
            ob[x] = lb[(s[k0] * w0 + s[k1] * w1 + half) >> shift]
            og[x] = lg[(s[k0 + one] * w0 + s[k1 + one] * w1 + half) >> shift]
            orr[x] = lr[(s[k0 + two] * w0 + s[k1 + two] * w1 + half) >> shift]
    else:  # every second weight is 0 (integer ratio such as 1920 → 640): one tap per value
        for x in range(j0.shape[0]):
            k0, w0 = j0[x], a0[x]
            ob[x] = lb[(s[k0] * w0 + half) >> shift]
            og[x] = lg[(s[k0 + one] * w0 + half) >> shift]
            orr[x] = lr[(s[k0 + two] * w0 + half) >> shift]


def _resize_into(src, rows, row_w, j0, j1, a0, a1, two_tap, col0, ncols, lut, dst_b, dst_g,
                 dst_r, top, left, tmp):  # pragma: no cover - compiled
    """Separable fixed-point bilinear, vertical first: blend the two source rows an output row
    needs (contiguous, vectorised) into `tmp`, then gather along x per output value, round like
    OpenCV's scalar path ((v + 2^21) >> 22), map through the per-channel LUT (scale, mean, std,
    dtype) and store into the three planes. A row whose second vertical weight is 0 is gathered
    straight from the source row, with no blend.

    src (H, W*3) uint8; rows/row_w (rh, 2) source rows and 11-bit weights; j0/j1 offsets into
    the blended row (already ×3) and a0/a1 weights per output column; lut (3, 256) indexed by
    source channel; dst_* the planes (H_in, W_in) that receive B, G and R.
    """
    right = left + j0.shape[0]
    for r in range(rows.shape[0]):
        b0, b1 = row_w[r, 0], row_w[r, 1]
        s0 = src[rows[r, 0], col0:col0 + ncols]
        y = top + r
        ob, og, orr = dst_b[y, left:right], dst_g[y, left:right], dst_r[y, left:right]
        if b1 == 0:
            _gather_row(s0, j0, j1, a0, a1, two_tap, np.uint64(1 << (_COEF_BITS - 1)),
                        np.uint64(_COEF_BITS), lut, ob, og, orr)
        else:
            s1 = src[rows[r, 1], col0:col0 + ncols]
            for i in range(ncols):
                tmp[i] = s0[i] * b0 + s1[i] * b1
            _gather_row(tmp, j0, j1, a0, a1, two_tap, np.uint64(_HALF), np.uint64(_SHIFT), lut,
                        ob, og, orr)


def _halve_signature(out: nt.Type, planar: bool = True) -> nt.Type:
    frame = nt.Array(nt.uint8, 2, "C", readonly=True)
    p = _plane(out, planar)
    return nt.void(frame, nt.int64, nt.int64, nt.int64, nt.int64, nt.boolean, nt.float32[::1],
                   out[:, ::1], p, p, p, nt.int64, nt.int64, nt.uint16[::1])


def _halve_into(src, y0, x0, rh, rw, affine, gain_bias, lut, dst_b, dst_g, dst_r, top, left,
                tmp):  # pragma: no cover - compiled
    """The exact 2× case (640x360 → 320, 1280x720 → 640, the commonest camera/model pairs).

    INTER_LINEAR at exactly half size samples between two pixels with weights 1/2 on both axes,
    so each value is the 2×2 mean rounded as OpenCV rounds it, (a + b + c + d + 2) >> 2. With no
    tap tables to look up the loops vectorise: about 4× the general kernel at this ratio. A
    float32 tensor is written by multiply-add (the reference's own float32 arithmetic, so
    identical values), which vectorises where a LUT gather does not.
    """
    n = 6 * rw
    c0 = 3 * x0
    g0, g1, g2 = gain_bias[0], gain_bias[1], gain_bias[2]
    h0, h1, h2 = gain_bias[3], gain_bias[4], gain_bias[5]
    lb, lg, lr = lut[0], lut[1], lut[2]
    for r in range(rh):
        s0 = src[y0 + 2 * r, c0:c0 + n]
        s1 = src[y0 + 2 * r + 1, c0:c0 + n]
        for i in range(n):
            tmp[i] = np.uint16(s0[i]) + np.uint16(s1[i])
        y = top + r
        ob, og, orr = dst_b[y, left:left + rw], dst_g[y, left:left + rw], dst_r[y, left:left + rw]
        if affine:
            for x in range(rw):
                k = 6 * x
                ob[x] = np.float32((tmp[k] + tmp[k + 3] + 2) >> 2) * g0 + h0
                og[x] = np.float32((tmp[k + 1] + tmp[k + 4] + 2) >> 2) * g1 + h1
                orr[x] = np.float32((tmp[k + 2] + tmp[k + 5] + 2) >> 2) * g2 + h2
        else:
            for x in range(rw):
                k = 6 * x
                ob[x] = lb[(tmp[k] + tmp[k + 3] + 2) >> 2]
                og[x] = lg[(tmp[k + 1] + tmp[k + 4] + 2) >> 2]
                orr[x] = lr[(tmp[k + 2] + tmp[k + 5] + 2) >> 2]


_NUMBA_TYPE = {np.float32: nt.float32, np.uint16: nt.uint16, np.uint8: nt.uint8}
_BUILT: list = []   # every kernel dispatcher made so far, for kernels_from_cache


def kernels(storage: type, planar: bool = True) -> tuple:
    """The general and the exact-2× kernel for one storage dtype and layout (`planar`: NCHW;
    else the strided planes of NHWC), compiled (or loaded from the cache) now."""
    return _kernels(storage, planar)   # one cache entry however the caller spells the call


@functools.cache
def _kernels(storage: type, planar: bool) -> tuple:
    t = _NUMBA_TYPE[storage]
    made = (numba.njit([_signature(t, planar)], **_JIT)(_resize_into),
            numba.njit([_halve_signature(t, planar)], **_JIT)(_halve_into))
    _BUILT.extend(made)
    return made


def kernels_from_cache() -> bool:
    """True if every kernel compiled so far was loaded from numba's on-disk cache (no compile
    paid)."""
    for kernel in _BUILT:
        stats = kernel.stats
        if stats.cache_misses or sum(stats.cache_hits.values()) != len(kernel.signatures):
            return False
    return True


def linear_taps(src_size: int, dst_size: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR taps for one axis: (dst, 2) source indices and 11-bit weights.

    Half-pixel centres, src = (dst + 0.5) * src/dst - 0.5 in float, clamped at both edges; no
    area averaging on downscale (OpenCV's own 2× special case averages 2×2, which is the same).
    """
    scale = 1.0 / (dst_size / src_size)
    f = ((np.arange(dst_size, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    low = s < 0
    f[low], s[low] = 0.0, 0
    high = s >= src_size - 1
    f[high], s[high] = 0.0, src_size - 1
    idx = np.stack([s, np.minimum(s + 1, src_size - 1)], axis=1).astype(np.int32)
    w1 = np.rint(f * np.float32(_COEF_SCALE))
    w0 = np.rint((np.float32(1.0) - f) * np.float32(_COEF_SCALE))
    weights = np.stack([w0, w1], axis=1).astype(np.int32)
    # Each weight is rounded on its own, as OpenCV does; a pair summing to more than 2049 could
    # round a level past 255 and index outside the 256-entry LUT (numba does not bounds-check).
    if int(weights.sum(axis=1).max()) > _COEF_SCALE + 1:
        raise RuntimeError(f"bilinear weights for {src_size} → {dst_size} exceed 1")
    return idx, weights


class _Plan:
    """Everything derived from one frame size: geometry, tap tables, the blend row buffer."""

    __slots__ = ("transform", "rows", "row_w", "j0", "j1", "a0", "a1", "two_tap", "col0", "ncols",
                 "tmp", "halve", "tmp16")

    def __init__(self, t: Transform) -> None:
        x0, y0, cw, ch = t.crop
        rh, rw = t.resized_hw
        self.transform = t
        rows, row_w = linear_taps(ch, rh)
        self.rows, self.row_w = (rows + y0).astype(np.uint32), row_w.astype(np.uint32)
        cols, col_w = linear_taps(cw, rw)
        cols = (cols * 3).astype(np.uint32)
        self.j0, self.j1 = cols[:, 0].copy(), cols[:, 1].copy()
        self.a0, self.a1 = col_w[:, 0].astype(np.uint32), col_w[:, 1].astype(np.uint32)
        self.two_tap = bool(np.any(self.a1 != 0))
        self.col0, self.ncols = 3 * x0, 3 * cw
        self.tmp = np.empty(self.ncols, np.uint32)
        self.halve = ch == 2 * rh and cw == 2 * rw
        self.tmp16 = np.empty(6 * rw, np.uint16)


class FusedPreprocessor:
    """Frame → (1, 3, H, W) tensor (or (1, H, W, 3) for `layout = "nhwc"`) in one numba pass;
    drop-in for `ReferencePreprocessor`.

    The tensor is allocated once and returned on every call: the caller reads it before the next
    call and never writes it (the letterbox padding is filled only when the frame size changes).
    """

    def __init__(self, cfg: InputConfig, input_hw: tuple[int, int], dtype: np.dtype) -> None:
        self.cfg, self.input_hw, self.dtype = cfg, input_hw, np.dtype(dtype)
        if self.dtype not in _STORAGE:
            raise ValueError(f"FusedPreprocessor writes float32, float16 or uint8 tensors, "
                             f"not {self.dtype}")
        ih, iw = input_hw
        planar = cfg.layout != "nhwc"
        self.tensor = np.empty((1, 3, ih, iw) if planar else (1, ih, iw, 3), self.dtype)
        storage = self.tensor.view(_STORAGE[self.dtype])[0]
        # Source channel k (B, G, R) lands in plane `planes[k]`; the LUT row k carries that
        # plane's (x * scale - mean) / std, computed with the reference's dtype arithmetic.
        channels = [2, 1, 0] if cfg.color == "rgb" else [0, 1, 2]
        planes = [channels.index(k) for k in range(3)]
        self._dst = tuple(storage[p] if planar else storage[:, :, p] for p in planes)
        self._lut = self._build_lut(cfg, self.dtype)[planes].view(_STORAGE[self.dtype]).copy()
        self._resize, self._halve = kernels(_STORAGE[self.dtype], planar)
        self._affine, self._gain_bias = self._affine_terms(cfg, self.dtype)
        self._gain_bias = self._gain_bias.reshape(2, 3)[:, planes].reshape(6).copy()
        self._plan: _Plan | None = None
        self._frame_hw: tuple[int, int] | None = None

    @staticmethod
    def _build_lut(cfg: InputConfig, dtype: np.dtype) -> np.ndarray:
        """(3, 256) output value per plane and grey level, bit-identical to the reference."""
        lut = np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 256)).astype(dtype)
        if dtype.kind == "f":
            std = np.asarray(cfg.std, np.float64)
            gain = (cfg.scale / std).astype(dtype)[:, None]
            bias = (-np.asarray(cfg.mean, np.float64) / std).astype(dtype)[:, None]
            if not (np.all(gain == 1.0) and np.all(bias == 0.0)):
                np.multiply(lut, gain, out=lut)
                np.add(lut, bias, out=lut)
        return lut

    @staticmethod
    def _affine_terms(cfg: InputConfig, dtype: np.dtype) -> tuple[bool, np.ndarray]:
        """For float32: gain and bias per plane, the same float32 values the reference uses."""
        std = np.asarray(cfg.std, np.float64)
        gain = (cfg.scale / std).astype(np.float32)
        bias = (-np.asarray(cfg.mean, np.float64) / std).astype(np.float32)
        return dtype == np.float32, np.concatenate([gain, bias]).astype(np.float32)

    @property
    def transform(self) -> Transform | None:
        return None if self._plan is None else self._plan.transform

    def _replan(self, frame_hw: tuple[int, int]) -> _Plan:
        t = plan_transform(frame_hw, self.input_hw, self.cfg.resize, self.cfg.crop_fraction,
                           self.cfg.align)
        plan = _Plan(t)
        pad = self.cfg.pad_value
        for k, plane in enumerate(self._dst):
            plane[:] = self._lut[k, pad]
        self._plan, self._frame_hw = plan, frame_hw
        return plan

    def warm_up(self, frame_hw: tuple[int, int] = (480, 640)) -> None:
        """Run the kernel once on a blank frame (compilation already happened at import)."""
        image = np.zeros((*frame_hw, 3), np.uint8)
        self(Frame(-1, image, 0.0, 0.0))

    def __call__(self, frame: Frame) -> tuple[np.ndarray, Transform]:
        image = frame.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frame image: expected (H, W, 3) uint8, got {image.shape} "
                             f"{image.dtype}")
        h, w = image.shape[0], image.shape[1]
        plan = self._plan
        if plan is None or (h, w) != self._frame_hw:
            plan = self._replan((h, w))
        if not image.flags.c_contiguous:
            image = np.ascontiguousarray(image)
        px, py = plan.transform.pad_xy
        b, g, r = self._dst
        if plan.halve:
            x0, y0, _, _ = plan.transform.crop
            rh, rw = plan.transform.resized_hw
            self._halve(image.reshape(h, w * 3), y0, x0, rh, rw, self._affine, self._gain_bias,
                        self._lut, b, g, r, py, px, plan.tmp16)
            return self.tensor, plan.transform
        self._resize(image.reshape(h, w * 3), plan.rows, plan.row_w, plan.j0, plan.j1, plan.a0,
                     plan.a1, plan.two_tap, plan.col0, plan.ncols, self._lut, b, g, r, py, px,
                     plan.tmp)
        return self.tensor, plan.transform
