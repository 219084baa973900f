"""Motion gating: has the frame changed enough since the last inferred one to be worth a model run?

A frame is reduced, in one numba pass straight from its pixels, to a small grid of grey block
means (36x64 by default; grey is the mean of B, G and R). Against the grid of the last frame
that was inferred, the global lighting change is taken out first — the median difference of the
blocks, then a gain and offset fitted to the blocks that shift alone explains, predictions
clipped to 0..255 as the sensor clips — so flicker, auto-exposure and sensor noise move no
block. A block whose residual exceeds `pixel_threshold` grey levels has changed; the frame has
changed when more than `area_threshold` of the blocks (with `zones_only`, of the blocks that
touch a zone the rules use) have. Every buffer is made when the gate is built: nothing is
allocated per frame. `block_means_np` and `changed_blocks_np` are the kernels' plain-numpy twins.
"""

from __future__ import annotations

import functools
from typing import Sequence

import cv2
import numba
import numpy as np
from numba import types as nt

from edgert import kernel_cache
from edgert.config.types import Config, MotionConfig, Zone
from edgert.decide.zones import ZoneGeometry
from edgert.errors import ConfigError

_JIT = kernel_cache.jit_options()   # before the first decorator: it picks the cache folder

MIN_GAIN, MAX_GAIN = 0.5, 2.0   # a fitted lighting gain outside this is not lighting: shift only


def _block_means(src, y_edges, x_edges, acc, out):  # pragma: no cover - compiled
    """src (H, W*3) uint8; y_edges (gh+1,), x_edges (gw+1,) the blocks' pixel boundaries;
    acc (W*3,) uint32 scratch; out (gh, gw) the grey mean of each block.

    A block row's source rows are added into `acc` whole (contiguous, vectorised), then each
    block sums its run of `acc`: every byte is read once and added twice at most.
    """
    gh, gw = out.shape[0], out.shape[1]
    n = acc.shape[0]
    for bi in range(gh):
        y0, y1 = y_edges[bi], y_edges[bi + 1]
        for k in range(n):
            acc[k] = 0
        for y in range(y0, y1):
            row = src[y]
            for k in range(n):
                acc[k] += np.uint32(row[k])
        for bj in range(gw):
            k0, k1 = 3 * x_edges[bj], 3 * x_edges[bj + 1]
            s = np.uint64(0)
            for k in range(k0, k1):
                s += acc[k]
            out[bi, bj] = s / ((y1 - y0) * (k1 - k0))


@numba.njit(**_JIT)
def _select(a, n, k):  # pragma: no cover - compiled
    """The k-th smallest of a[:n], in place (Wirth's selection); a[:k] ends up ≤ a[k]."""
    lo, hi = 0, n - 1
    while lo < hi:
        pivot = a[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if j < k:
            lo = i
        if k < i:
            hi = j
    return a[k]


@numba.njit(**_JIT)
def _clip(v):  # pragma: no cover - compiled
    return min(max(v, 0.0), 255.0)


def _changed_blocks(cur, ref, mask, threshold, scratch):  # pragma: no cover - compiled
    """How many blocks in `mask` moved more than `threshold` grey levels from `ref` to `cur`
    once the global lighting change (median shift, then gain and offset) is taken out.
    scratch (gh*gw,) float64."""
    gh, gw = cur.shape[0], cur.shape[1]
    n = gh * gw
    for i in range(gh):
        for j in range(gw):
            scratch[i * gw + j] = cur[i, j] - ref[i, j]
    k = n // 2
    shift = _select(scratch, n, k)
    if n % 2 == 0:   # the mean of the two middle values, as np.median
        below = scratch[0]
        for i in range(1, k):
            below = max(below, scratch[i])
        shift = (below + shift) / 2.0
    m = 0
    sx, sy, sxx, sxy = 0.0, 0.0, 0.0, 0.0
    for i in range(gh):
        for j in range(gw):
            x, y = ref[i, j], cur[i, j]
            if abs(y - _clip(x + shift)) <= threshold:
                m += 1
                sx += x
                sy += y
                sxx += x * x
                sxy += x * y
    gain, offset = 1.0, shift
    if 2 * m >= n:
        var = sxx - sx * sx / m
        if var > m:   # the reference varies by more than a grey level: a gain can be told
            g = (sxy - sx * sy / m) / var
            if MIN_GAIN <= g <= MAX_GAIN:
                gain, offset = g, (sy - g * sx) / m
    count = 0
    for i in range(gh):
        for j in range(gw):
            if mask[i, j] and abs(cur[i, j] - _clip(gain * ref[i, j] + offset)) > threshold:
                count += 1
    return count


_BUILT: list = []


@functools.cache
def kernels() -> tuple:
    """The block-mean and the comparison kernel, compiled (or loaded from the cache) now."""
    frame = nt.Array(nt.uint8, 2, "C", readonly=True)    # sources hand out read-only frames
    i64, f64 = nt.int64[::1], nt.float64[:, ::1]
    made = (numba.njit([nt.void(frame, i64, i64, nt.uint32[::1], f64)], **_JIT)(_block_means),
            numba.njit([nt.int64(f64, f64, nt.boolean[:, ::1], nt.float64, nt.float64[::1])],
                       **_JIT)(_changed_blocks))
    _BUILT.extend(made)
    return made


def kernels_from_cache() -> bool:
    """True if every kernel compiled so far was loaded from numba's on-disk cache."""
    for kernel in _BUILT:
        stats = kernel.stats
        if stats.cache_misses or sum(stats.cache_hits.values()) != len(kernel.signatures):
            return False
    return True


def block_edges(size: int, blocks: int) -> np.ndarray:
    """(blocks+1,) boundaries of `blocks` near-equal runs over `size` pixels."""
    return (np.arange(blocks + 1, dtype=np.int64) * size) // blocks


def zone_blocks(polygons: Sequence[Sequence[tuple[float, float]]], frame_hw: tuple[int, int],
                grid: tuple[int, int]) -> np.ndarray:
    """(gh, gw) bool: the blocks any pixel of which lies in one of the polygons (frame pixels).

    A block a corner of the polygon falls in counts too, so a zone smaller than a block still
    has one.
    """
    h, w = frame_hw
    ye, xe = block_edges(h, grid[0]), block_edges(w, grid[1])
    pixels = np.zeros((h, w), np.uint8)
    for poly in polygons:
        cv2.fillPoly(pixels, [np.round(np.asarray(poly, np.float64)).astype(np.int32)], 1)
    mask = np.maximum.reduceat(np.maximum.reduceat(pixels, ye[:-1], axis=0), xe[:-1], axis=1) > 0
    for poly in polygons:
        for x, y in poly:
            bi = np.searchsorted(ye, min(max(y, 0.0), h - 1), side="right") - 1
            bj = np.searchsorted(xe, min(max(x, 0.0), w - 1), side="right") - 1
            mask[bi, bj] = True
    return mask


def rule_zones(cfg: Config) -> tuple[Zone, ...]:
    """The zones some rule names, in config order."""
    used = {r.zone for r in cfg.rules}
    return tuple(z for z in cfg.zones if z.name in used)


def block_means_np(image: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The numpy twin of the block-mean kernel: (gh, gw) float64 grey means of a BGR frame."""
    h, w = image.shape[:2]
    ye, xe = block_edges(h, grid[0]), block_edges(w, grid[1])
    flat = image.reshape(h, w * 3).astype(np.int64)
    sums = np.add.reduceat(np.add.reduceat(flat, ye[:-1], axis=0), 3 * xe[:-1], axis=1)
    return sums / (np.diff(ye)[:, None] * 3 * np.diff(xe)[None, :])


def changed_blocks_np(cur: np.ndarray, ref: np.ndarray, mask: np.ndarray,
                      threshold: float) -> int:
    """The numpy twin of the comparison kernel."""
    shift = float(np.median(cur - ref))
    inliers = np.abs(cur - np.clip(ref + shift, 0.0, 255.0)) <= threshold
    gain, offset = 1.0, shift
    m = int(np.count_nonzero(inliers))
    if 2 * m >= cur.size:
        x, y = ref[inliers], cur[inliers]
        var = float(np.sum(x * x) - np.sum(x) ** 2 / m)
        if var > m:
            g = float(np.sum(x * y) - np.sum(x) * np.sum(y) / m) / var
            if MIN_GAIN <= g <= MAX_GAIN:
                gain, offset = g, float(np.sum(y) - g * np.sum(x)) / m
    moved = np.abs(cur - np.clip(gain * ref + offset, 0.0, 255.0)) > threshold
    return int(np.count_nonzero(moved & mask))


class MotionGate:
    """Whether a frame differs enough from the last inferred frame to be inferred again.

    On each frame the caller asks `changed(image)` (and `due(media_s)`, which forces a frame at
    least every `force_every_s`); for each frame it then really inferred it says `inferred(image,
    media_s)`, which makes that frame the reference. A frame that is skipped, or given up on
    before its inference finished, is not a reference: change is always measured against what
    the model last saw. One gate per source; it is not thread-safe.
    """

    def __init__(self, cfg: MotionConfig, frame_hw: tuple[int, int],
                 mask: np.ndarray | None = None) -> None:
        gh, gw = cfg.grid
        h, w = frame_hw
        if h < gh or w < gw:
            raise ValueError(f"motion grid {gh}x{gw} is finer than the {w}x{h} frame")
        if mask is not None and (mask.shape != (gh, gw) or not mask.any()):
            raise ValueError(f"motion mask: expected ({gh}, {gw}) with a block set, got "
                             f"{mask.shape} with {int(np.count_nonzero(mask))}")
        self.cfg, self.frame_hw = cfg, (h, w)
        self._y_edges, self._x_edges = block_edges(h, gh), block_edges(w, gw)
        self.mask = (np.ones((gh, gw), np.bool_) if mask is None   # the blocks that count
                     else np.ascontiguousarray(mask, np.bool_))
        self._blocks = int(np.count_nonzero(self.mask))
        self._acc = np.empty(3 * w, np.uint32)
        self._scratch = np.empty(gh * gw, np.float64)
        self._current = np.zeros((gh, gw), np.float64)
        self._reference = np.zeros((gh, gw), np.float64)
        self._has_reference = False
        self._last_inferred_s: float | None = None
        self._means, self._compare = kernels()
        self.share = 1.0   # of the blocks counted, the share that moved, at the last changed()

    @classmethod
    def for_config(cls, cfg: Config, frame_hw: tuple[int, int]) -> MotionGate:
        """The gate [motion] asks for at this frame size; with zones_only, counting only the
        blocks of the zones the rules use. A grid finer than the frame is a ConfigError."""
        motion = cfg.motion
        h, w = frame_hw
        if h < motion.grid[0] or w < motion.grid[1]:
            raise ConfigError(str(cfg.file), "motion.grid", f"is {list(motion.grid)}, finer than "
                              f"the source's {w}x{h} frame", f"use at most [{h}, {w}] blocks")
        mask = None
        if motion.zones_only:
            polygons = [ZoneGeometry(z).pixels(frame_hw) for z in rule_zones(cfg)]
            mask = zone_blocks(polygons, frame_hw, motion.grid)
        return cls(motion, frame_hw, mask)

    def _measure(self, image: np.ndarray, out: np.ndarray) -> None:
        h, w = self.frame_hw
        if image.shape != (h, w, 3) or image.dtype != np.uint8:
            raise ValueError(f"motion gate built for ({h}, {w}, 3) uint8 frames, got "
                             f"{image.shape} {image.dtype}")
        if not image.flags.c_contiguous:
            image = np.ascontiguousarray(image)
        self._means(image.reshape(h, w * 3), self._y_edges, self._x_edges, self._acc, out)

    def warm_up(self) -> None:
        """Run both kernels once on a blank frame, leaving no reference behind."""
        blank = np.zeros((*self.frame_hw, 3), np.uint8)
        self._measure(blank, self._current)
        self._compare(self._current, self._current, self.mask, self.cfg.pixel_threshold,
                      self._scratch)

    def changed(self, image: np.ndarray) -> bool:
        """Whether `image` (BGR uint8, the gate's frame size) moved more than `area_threshold`
        of the counted blocks since the last inferred frame; True before any was inferred."""
        self._measure(image, self._current)
        if not self._has_reference:
            self.share = 1.0
            return True
        moved = self._compare(self._current, self._reference, self.mask,
                              self.cfg.pixel_threshold, self._scratch)
        self.share = moved / self._blocks
        return self.share > self.cfg.area_threshold

    def due(self, media_s: float) -> bool:
        """Whether `force_every_s` of media time has passed since the last inferred frame
        (or none was inferred, or time went back: a file that loops)."""
        last = self._last_inferred_s
        return last is None or media_s < last or media_s - last >= self.cfg.force_every_s

    def inferred(self, image: np.ndarray, media_s: float) -> None:
        """The model ran on `image`, taken at `media_s`: it is the new reference."""
        self._measure(image, self._reference)
        self._has_reference = True
        self._last_inferred_s = media_s
