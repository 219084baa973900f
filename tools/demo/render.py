"""Synthetic conveyor renderer: one code path draws both the demo clip and the detector's training data."""
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .parts import make_part

W, H, FPS = 640, 360, 15
MIN_VISIBLE = 0.30     # objects less visible than this are left out of the truth
DEFECT_VISIBLE = 0.60  # a defective part whose defect is mostly off-frame cannot be judged from pixels
TEX_W = 1536           # belt texture period; longer than the frame so the repetition is not obvious


@dataclass
class Scene:
    static: np.ndarray       # HxWx3 background with rails (does not move)
    belt_y0: int
    belt_y1: int
    belt_tex: np.ndarray     # (belt_y1-belt_y0) x TEX_W x 3, periodic along x
    illum: np.ndarray        # HxWx1 lamp fall-off
    light_dir: tuple         # unit vector pointing from the surface toward the lamp (image coords)
    shadow_off: tuple
    shadow_sigma: float
    shadow_strength: float


# ----------------------------------------------------------------------------- helpers

def _blur_wrap_x(img, sigma):
    """Gaussian blur that wraps horizontally so the belt texture stays seamless when it scrolls."""
    pad = int(3 * sigma) + 1
    tiled = np.concatenate([img[:, -pad:], img, img[:, :pad]], axis=1)
    out = cv2.GaussianBlur(tiled, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return out[:, pad:-pad]


def _paste(dst, src, x, y, mode, weight=None):
    """Blend src (or darken with it) into dst at integer (x, y), clipping at the frame edges."""
    h, w = src.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, dst.shape[1]), min(y + h, dst.shape[0])
    if x0 >= x1 or y0 >= y1:
        return
    s = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    d = dst[y0:y1, x0:x1]
    if mode == "shadow":
        d *= (1.0 - src[s])[..., None]
    else:
        a = weight[s][..., None]
        d *= 1.0 - a
        d += src[s] * a


# ----------------------------------------------------------------------------- scene

def make_scene(rng, wide=False):
    """Static background, belt texture and lamp; `wide` widens the ranges for training variety."""
    if wide:
        by0 = int(rng.uniform(28, 84))
        by1 = int(min(H - 16, by0 + rng.uniform(200, 292)))
        shade = rng.uniform(28, 118)
        tint = rng.normal(0, 3, 3) if rng.random() < 0.8 else rng.normal(0, 10, 3)
        bg = rng.uniform(18, 60)
    else:
        by0, by1 = 54, 306
        shade = rng.uniform(52, 66)
        tint = rng.normal(0, 2, 3)
        bg = rng.uniform(32, 42)
    bh = by1 - by0
    rail = 12

    # Background: dark machine frame with a soft vertical gradient and a few bolted cross members.
    yy = np.linspace(-1, 1, H, dtype=np.float32)[:, None, None]
    static = np.full((H, W, 3), bg, np.float32) * (1 + 0.15 * yy) + np.array([4, 2, 0], np.float32)
    static += cv2.GaussianBlur(rng.normal(0, 6, (H, W)).astype(np.float32), (0, 0), 6)[..., None]
    for ry in (by0 - rail, by1):
        # Side rails: brushed steel strips with bolt heads; they frame the belt like a real guide.
        strip = np.linspace(1.25, 0.8, rail, dtype=np.float32)[:, None, None]
        level = rng.uniform(110, 150)
        static[ry:ry + rail] = level * strip + rng.normal(0, 3, (rail, W, 1)).astype(np.float32)
        bx = rng.uniform(20, 60)
        while bx < W:
            cv2.circle(static, (int(bx), ry + rail // 2), 3, (level * 0.5,) * 3, -1, cv2.LINE_AA)
            cv2.circle(static, (int(bx) - 1, ry + rail // 2 - 1), 1, (level * 1.4,) * 3, -1, cv2.LINE_AA)
            bx += rng.uniform(80, 110)

    # Belt: rubber grain + lengthwise wear streaks + blotches + seams with lacing staples.
    tex = np.full((bh, TEX_W, 3), shade, np.float32) + tint.astype(np.float32)
    grain = _blur_wrap_x(rng.normal(0, 6, (bh, TEX_W)).astype(np.float32), 0.8)
    streak = cv2.GaussianBlur(rng.normal(0, 4, (bh, 1)).astype(np.float32), (0, 0), 1.5)
    blotch = _blur_wrap_x(rng.normal(0, 40, (bh, TEX_W)).astype(np.float32), 14)
    tex += (grain + streak + blotch)[..., None]
    for _ in range(int(rng.integers(120, 260))):
        cx, cy = int(rng.integers(0, TEX_W)), int(rng.integers(0, bh))
        v = shade + rng.uniform(-22, 22)
        cv2.circle(tex, (cx, cy), int(rng.integers(1, 3)), (v, v, v), -1, cv2.LINE_AA)
    n_seams = int(rng.integers(2, 4))
    for sx in np.sort(rng.uniform(0, TEX_W - 8, n_seams)).astype(int):
        tex[:, sx:sx + 3] *= 0.55
        tex[:, sx + 3:sx + 4] *= 1.25
        for sy in range(4, bh - 4, 14):
            v = shade * 1.8 + 30
            cv2.rectangle(tex, (sx - 2, sy), (sx + 4, sy + 3), (v, v, v * 0.95), -1)
    tex[:3] *= 0.75
    tex[-3:] *= 0.75

    # Lamp: off-centre hot spot with fall-off, which also makes the flicker look uneven.
    lx, ly = rng.uniform(0.2, 0.8) * W, rng.uniform(-0.3, 0.4) * H
    xx, yy2 = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    d2 = ((xx - lx) / W) ** 2 + ((yy2 - ly) / H) ** 2
    illum = (1.12 - rng.uniform(0.15, 0.35) * d2)[..., None].astype(np.float32)

    ang = rng.uniform(-2.4, -0.7) if wide else rng.uniform(-2.3, -1.9)  # lamp up-left-ish
    light = (math.cos(ang), math.sin(ang))
    dist = rng.uniform(4, 9)
    return Scene(static=static, belt_y0=by0, belt_y1=by1, belt_tex=tex, illum=illum, light_dir=light,
                 shadow_off=(-light[0] * dist, -light[1] * dist), shadow_sigma=rng.uniform(2.5, 4.5),
                 shadow_strength=rng.uniform(0.35, 0.6))


# ----------------------------------------------------------------------------- frames

@dataclass
class Look:
    gain: float = 1.0
    blur_len: int = 1        # horizontal motion-blur length on the belt, px
    defocus: float = 0.0     # Gaussian sigma, px
    noise: float = 2.0       # sensor read noise sigma, grey levels


def render_frame(scene, belt_offset, placed, look, rng):
    """placed: list of (Part, x, y) integer sprite positions. Returns (BGR uint8 frame, objects)."""
    img = scene.static.copy()
    by0, by1 = scene.belt_y0, scene.belt_y1
    o = (-int(round(belt_offset))) % TEX_W
    tex = scene.belt_tex
    img[by0:by1] = tex[:, o:o + W] if o + W <= TEX_W else np.concatenate([tex[:, o:], tex[:, :o + W - TEX_W]], 1)
    for p, x, y in placed:
        _paste(img, p.shadow, x, y, "shadow")
    for p, x, y in placed:
        _paste(img, p.colour, x, y, "blend", p.alpha)
    if look.blur_len > 1:
        # Only the belt and what it carries move; the frame and rails stay sharp.
        k = np.ones((1, look.blur_len), np.float32) / look.blur_len
        img[by0:by1] = cv2.filter2D(img[by0:by1], -1, k, borderType=cv2.BORDER_REPLICATE)
    img *= scene.illum * look.gain
    if look.defocus > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), look.defocus)
    # Sensor: read noise plus shot noise that grows with brightness.
    n = np.empty_like(img)
    cv2.setRNGSeed(int(rng.integers(2 ** 31)))  # OpenCV's generator is ~3x faster; seeded from ours
    cv2.randn(n, (0, 0, 0), (1, 1, 1))
    img += n * np.sqrt(look.noise ** 2 + 0.02 * np.maximum(img, 0))
    frame = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return frame, objects_of(placed)


def objects_of(placed):
    """Frame-space truth: label, clipped box, plus `ignore` for objects the pixels cannot settle."""
    out = []
    for k, (p, x, y) in enumerate(placed):
        bx0, by0, bx1, by1 = p.box[0] + x, p.box[1] + y, p.box[2] + x, p.box[3] + y
        cx0, cx1 = max(bx0, 0.0), min(bx1, float(W))
        cy0, cy1 = max(by0, 0.0), min(by1, float(H))
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        vis = (cx1 - cx0) * (cy1 - cy0) / ((bx1 - bx0) * (by1 - by0))
        ignore = vis < MIN_VISIBLE
        if p.defective and not ignore:
            dx0, dx1 = p.defect_box[0] + x, p.defect_box[2] + x
            dvis = max(0.0, min(dx1, W) - max(dx0, 0)) / max(dx1 - dx0, 1e-6)
            ignore = dvis < DEFECT_VISIBLE
        out.append({"slot": k, "label": "defect" if p.defective else "part", "kind": p.defect_kind,
                    "box": [cx0, cy0, cx1, cy1], "visible": vis, "ignore": bool(ignore),
                    "full": vis >= 0.999})
    return out


# ----------------------------------------------------------------------------- the demo clip

def make_clip(seed, n_frames=300):
    """Plan a clip: a mild scene, a queue of parts riding the belt, and a per-frame look.

    Returns (scene, tracks, belt offsets, looks, stats); each track is (Part, y, x-per-frame).
    Retries deterministically until the clip shows enough good and defective parts crossing fully.
    """
    scene = make_scene(np.random.default_rng([seed, 7]))
    for attempt in range(50):
        rng = np.random.default_rng([seed, 8, attempt])
        t = np.arange(n_frames)
        speed = 13.0 * (1 + 0.07 * np.sin(2 * np.pi * t / 110 + rng.uniform(0, 6.3)))
        offset = np.concatenate([[0.0], np.cumsum(speed)[:-1]])
        travel = offset[-1]
        tracks, u, bag = [], rng.uniform(380, 540), []
        while u > -travel - 200:
            if not bag:  # 2 defective in every 5 keeps the clip near 40% without long streaks
                bag = list(rng.permutation([True, True, False, False, False]))
            p = make_part(rng, scene, bag.pop())
            if tracks:
                u -= p.w + rng.uniform(115, 230)
            y_lo = scene.belt_y0 + 8 - p.box[1]
            y_hi = scene.belt_y1 - 8 - p.box[3]
            y = int(rng.uniform(y_lo, y_hi))
            slip = rng.uniform(-0.04, 0.04)   # each part rides slightly faster/slower than the belt
            centre_off = 320 - p.w / 2 - u
            xs = np.round(u - p.box[0] + offset + slip * (offset - centre_off)).astype(int)
            tracks.append((p, y, xs))
        ok, stats = _check_clip(tracks, n_frames)
        if ok:
            looks = _clip_looks(rng, n_frames)
            stats["attempt"] = attempt
            return scene, tracks, offset, looks, stats
    raise RuntimeError("could not plan a clip satisfying the constraints")


def _check_clip(tracks, n_frames):
    seen = [(p, y, xs) for p, y, xs in tracks if np.any((xs + p.box[2] > 0) & (xs + p.box[0] < W))]
    crossing = [p for p, y, xs in seen if (xs[0] + p.box[2] <= 0) and (xs[-1] + p.box[0] >= W)]
    n_def = sum(p.defective for p, _, _ in seen)
    frac = n_def / max(len(seen), 1)
    cross_def = sum(p.defective for p in crossing)
    cross_good = len(crossing) - cross_def
    # No two parts may ever touch while on screen (8 px margin covers motion blur).
    for i in range(len(seen) - 1):
        (p, y, xs), (q, _, xq) = seen[i], seen[i + 1]
        on = ((xs + p.box[2] > 0) & (xs + p.box[0] < W)) | ((xq + q.box[2] > 0) & (xq + q.box[0] < W))
        gap = (xs + p.box[0]) - (xq + q.box[2])
        if np.min(gap[on]) < 8:
            return False, None
    visible = np.zeros(n_frames, int)
    for p, y, xs in seen:
        x0, x1 = xs + p.box[0], xs + p.box[2]
        vis = (np.minimum(x1, W) - np.maximum(x0, 0)) / p.w
        visible += vis >= MIN_VISIBLE
    ok = 0.35 <= frac <= 0.45 and cross_def >= 5 and cross_good >= 5 and visible.min() >= 1
    stats = dict(parts=len(seen), defective=n_def, crossing_defective=cross_def,
                 crossing_good=cross_good, visible_min=int(visible.min()), visible_max=int(visible.max()),
                 visible_mean=float(visible.mean()))
    return ok, stats


def _episodes(rng, n_frames, count, length, peak):
    """Smooth bumps (ramp up, hold, ramp down) at random times: occasional blur, not constant."""
    out = np.zeros(n_frames, np.float32)
    for _ in range(count):
        L = int(rng.integers(*length))
        s = int(rng.integers(0, n_frames - L))
        out[s:s + L] = np.maximum(out[s:s + L], peak * np.sin(np.linspace(0, np.pi, L)))
    return out


def _clip_looks(rng, n_frames):
    t = np.arange(n_frames) / FPS
    drift = 1 + 0.13 * np.sin(2 * np.pi * t / 17 + rng.uniform(0, 6.3))
    flicker = 1 + 0.035 * np.sin(2 * np.pi * 1.3 * t + rng.uniform(0, 6.3))  # mains beat vs. shutter
    blur = 1 + _episodes(rng, n_frames, 3, (14, 28), 6.0)
    focus = _episodes(rng, n_frames, 2, (14, 24), 1.3)
    return [Look(gain=float(0.95 * drift[i] * flicker[i]), blur_len=int(round(blur[i])),
                 defocus=float(focus[i]), noise=1.6) for i in range(n_frames)]


def clip_frames(seed, n_frames=300):
    """Yield (frame_id, BGR frame, objects-with-track-ids) for the demo clip, plus planning stats."""
    scene, tracks, offset, looks, stats = make_clip(seed, n_frames)
    rng = np.random.default_rng([seed, 99])

    def gen():
        for i in range(n_frames):
            placed, ids = [], []
            for k, (p, y, xs) in enumerate(tracks):
                x = int(xs[i])
                if x + p.box[2] > 0 and x + p.box[0] < W:
                    placed.append((p, x, y))
                    ids.append(k)
            frame, objs = render_frame(scene, offset[i], placed, looks[i], rng)
            for o in objs:
                o["id"] = ids[o.pop("slot")]
            yield i, frame, objs
    return gen(), stats


# ----------------------------------------------------------------------------- training frames

def random_frames(seed, n, defect_rate=0.45, per_scene=8):
    """Independent frames with wide variety (belt shade, light, blur, part count) for training."""
    rng = np.random.default_rng([seed, 11])
    scene, pool = None, []
    for i in range(n):
        if i % per_scene == 0:
            scene = make_scene(rng, wide=True)
            pool = [make_part(rng, scene, rng.random() < defect_rate) for _ in range(10)]
        k = int(rng.choice([0, 1, 2, 3, 4], p=[0.02, 0.12, 0.30, 0.36, 0.20]))
        order = rng.permutation(len(pool))[:k]
        placed, right = [], W + rng.uniform(-0.3, 0.6) * 100
        for j in order:
            p = pool[j]
            x_right = right - rng.uniform(10, 110)
            x0 = x_right - p.w
            if x0 < -0.75 * p.w:
                break
            y_lo = scene.belt_y0 + 6 - p.box[1]
            y_hi = max(y_lo + 1, scene.belt_y1 - 6 - p.box[3])
            placed.append((p, int(round(x0 - p.box[0])), int(rng.uniform(y_lo, y_hi))))
            right = x0
        if placed and rng.random() < 0.5:
            # Shift the whole row so both frame edges see partial parts equally often.
            dx = int(rng.uniform(-1, 1) * 120)
            placed = [(p, x + dx, y) for p, x, y in placed]
        blur = int(rng.choice([1, 1, 1, 3, 5, 7, 9]))
        look = Look(gain=float(rng.uniform(0.6, 1.3)), blur_len=blur,
                    defocus=float(rng.uniform(0.4, 1.6)) if rng.random() < 0.3 else 0.0,
                    noise=float(rng.uniform(1.0, 5.0)))
        frame, objs = render_frame(scene, rng.uniform(0, TEX_W), placed, look, rng)
        yield frame, objs
