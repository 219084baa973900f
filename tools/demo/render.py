"""Synthetic conveyor renderer: one code path draws both the demo clip and the detector's training data."""
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

W, H, FPS = 640, 360, 15
SS = 4                 # supersampling factor so part outlines are anti-aliased like a real lens
MIN_VISIBLE = 0.30     # objects less visible than this are left out of the truth
DEFECT_VISIBLE = 0.60  # a defective part whose defect is mostly off-frame cannot be judged from pixels
TEX_W = 1536           # belt texture period; longer than the frame so the repetition is not obvious

DEFECT_KINDS = ("crack", "scratch", "chip", "rust", "burn")


@dataclass
class Part:
    colour: np.ndarray       # float32 DxDx3, BGR, already shaded
    alpha: np.ndarray        # float32 DxD coverage
    shadow: np.ndarray       # float32 DxD, already offset and blurred for this scene's lamp
    box: tuple               # tight box in sprite coordinates (x0, y0, x1, y1)
    defective: bool
    defect_kind: str = None
    defect_box: tuple = None  # sprite coordinates

    @property
    def w(self):
        return self.box[2] - self.box[0]

    @property
    def h(self):
        return self.box[3] - self.box[1]


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
    palette: list = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers

def _blur_wrap_x(img, sigma):
    """Gaussian blur that wraps horizontally so the belt texture stays seamless when it scrolls."""
    pad = int(3 * sigma) + 1
    tiled = np.concatenate([img[:, -pad:], img, img[:, :pad]], axis=1)
    out = cv2.GaussianBlur(tiled, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return out[:, pad:-pad]


def _rounded_rect(img, x0, y0, x1, y1, r, val):
    x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
    r = int(max(1, min(r, (x1 - x0) // 2, (y1 - y0) // 2)))
    cv2.rectangle(img, (x0 + r, y0), (x1 - r, y1), val, -1)
    cv2.rectangle(img, (x0, y0 + r), (x1, y1 - r), val, -1)
    for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
        cv2.circle(img, (cx, cy), r, val, -1, cv2.LINE_8)


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


def _box_of(alpha, thr=0.5):
    ys, xs = np.nonzero(alpha > thr)
    if len(xs) == 0:
        return None
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


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


# ----------------------------------------------------------------------------- parts

METALS = [(168, 166, 162), (188, 188, 192), (176, 170, 158), (150, 152, 156), (110, 150, 178)]


def _random_walk(rng, inside, start, length, jitter, step):
    """Jittery walk that turns away from the outline instead of leaving the part."""
    pts = [np.array(start, np.float64)]
    theta = rng.uniform(0, 2 * math.pi)
    travelled = 0.0
    while travelled < length:
        for tries in range(8):
            t = theta + rng.normal(0, jitter + 0.4 * tries)
            p = pts[-1] + step * np.array([math.cos(t), math.sin(t)])
            x, y = int(p[0]), int(p[1])
            if 0 <= y < inside.shape[0] and 0 <= x < inside.shape[1] and inside[y, x]:
                break
        else:
            break
        theta = t
        pts.append(p)
        travelled += step
    return np.round(np.array(pts)).astype(np.int32)


def _long_walk(rng, inside, length, jitter, step):
    """Best of a few walks from random starts, so a defect is never a dot."""
    ys, xs = np.nonzero(inside)
    best = None
    for _ in range(6):
        i = rng.integers(len(xs))
        pts = _random_walk(rng, inside, (xs[i], ys[i]), length, jitter, step)
        if best is None or len(pts) > len(best):
            best = pts
        if len(pts) * step >= 0.8 * length:
            break
    return best


def make_part(rng, scene, defective, kind=None):
    """Draw one machined part (plus its defect) as a shaded sprite with alpha and shadow."""
    shape = rng.choice(["bracket", "washer", "plate", "lbracket"], p=[0.35, 0.2, 0.25, 0.2])
    if shape == "bracket":
        w, h = rng.uniform(86, 124), rng.uniform(48, 66)
    elif shape == "washer":
        w = h = 2 * rng.uniform(31, 42)
    elif shape == "plate":
        w, h = rng.uniform(64, 88), rng.uniform(58, 80)
    else:
        w, h = rng.uniform(80, 108), rng.uniform(62, 82)
    D = int(math.ceil(math.hypot(w, h))) + 48
    Ds, c = D * SS, D * SS / 2
    m = np.zeros((Ds, Ds), np.uint8)
    x0, y0, x1, y1 = c - w * SS / 2, c - h * SS / 2, c + w * SS / 2, c + h * SS / 2
    if shape == "bracket":
        _rounded_rect(m, x0, y0, x1, y1, rng.uniform(6, 14) * SS, 255)
        hr, hx = rng.uniform(5, 8) * SS, w * SS / 2 - h * SS * 0.45
        for sx in (-1, 1):
            cv2.circle(m, (int(c + sx * hx), int(c)), int(hr), 0, -1)
        if rng.random() < 0.5:  # centre slot
            _rounded_rect(m, c - 12 * SS, c - 4 * SS, c + 12 * SS, c + 4 * SS, 4 * SS, 0)
    elif shape == "washer":
        cv2.circle(m, (int(c), int(c)), int(w * SS / 2), 255, -1)
        cv2.circle(m, (int(c), int(c)), int(w * SS / 2 * rng.uniform(0.3, 0.45)), 0, -1)
    elif shape == "plate":
        _rounded_rect(m, x0, y0, x1, y1, rng.uniform(8, 18) * SS, 255)
        cv2.circle(m, (int(c), int(c)), int(rng.uniform(8, 13) * SS), 0, -1)
        if rng.random() < 0.5:
            for sx in (-1, 1):
                for sy in (-1, 1):
                    cv2.circle(m, (int(c + sx * (w / 2 - 9) * SS), int(c + sy * (h / 2 - 9) * SS)),
                               int(3.5 * SS), 0, -1)
    else:
        t = rng.uniform(24, 32) * SS
        r = rng.uniform(5, 10) * SS
        _rounded_rect(m, x0, y1 - t, x1, y1, r, 255)
        _rounded_rect(m, x0, y0, x0 + t, y1, r, 255)
        cv2.circle(m, (int(x0 + t / 2), int(y0 + t / 2)), int(5 * SS), 0, -1)
        cv2.circle(m, (int(x1 - t / 2), int(y1 - t / 2)), int(5 * SS), 0, -1)

    # Defects are drawn in the part's own frame so they rotate with it.
    dark = np.zeros((Ds, Ds), np.uint8)     # crack / scratch ink
    spot = np.zeros((Ds, Ds), np.float32)   # rust / burn coverage
    fresh = np.zeros((Ds, Ds), np.uint8)    # bright broken edge of a chip
    kind = kind or (rng.choice(DEFECT_KINDS, p=[0.22, 0.13, 0.32, 0.18, 0.15]) if defective else None)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 5) / SS
    region = np.zeros((Ds, Ds), np.uint8)   # where the defect is, for its box
    if kind in ("crack", "scratch"):
        crack = kind == "crack"
        length = rng.uniform(40, 64) if crack else rng.uniform(52, 78)
        pts = _long_walk(rng, inside > 3, length * SS, 0.3 if crack else 0.05, 3 * SS)
        th = int(rng.uniform(2.8, 3.8) * SS)
        cv2.polylines(dark, [pts], False, 255, th, cv2.LINE_AA)
        if crack and len(pts) > 6 and rng.random() < 0.5:
            br = _random_walk(rng, inside > 2, pts[len(pts) // 2], length * 0.4 * SS, 0.5, 3 * SS)
            cv2.polylines(dark, [br], False, 255, max(SS, th - SS), cv2.LINE_AA)
        region = dark
    elif kind in ("rust", "burn"):
        ys, xs = np.nonzero(inside > 7)
        i = rng.integers(len(xs))
        R = rng.uniform(9, 15) * SS
        blob = np.zeros((Ds, Ds), np.float32)
        for _ in range(int(rng.integers(4, 8))):
            o = rng.normal(0, R * 0.35, 2)
            cv2.circle(blob, (int(xs[i] + o[0]), int(ys[i] + o[1])), int(R * rng.uniform(0.4, 0.75)), 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), R * 0.25)
        spot = np.clip((blob - 0.15) / 0.5, 0, 1) * (m > 0)
        region = (spot > 0.3).astype(np.uint8) * 255
    elif kind == "chip":
        # Bite a jagged piece out of the outline, preferring corners where parts really chip.
        cnts, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        pts = max(cnts, key=len)[:, 0, :].astype(np.float64)
        d = np.hypot(pts[:, 0] - c, pts[:, 1] - c)
        p = (d / d.max()) ** 8
        centre = pts[rng.choice(len(pts), p=p / p.sum())]
        R = rng.uniform(20, 28) * SS
        angs = np.arange(12) * (2 * math.pi / 12) + rng.uniform(-0.2, 0.2, 12)
        rad = R * rng.uniform(0.5, 1.0, 12)
        poly = np.stack([centre[0] + np.cos(angs) * rad, centre[1] + np.sin(angs) * rad], 1).astype(np.int32)
        bite = np.zeros_like(m)
        cv2.fillPoly(bite, [poly], 255)
        region = cv2.bitwise_and(bite, m)
        m = cv2.bitwise_and(m, cv2.bitwise_not(bite))
        edge = cv2.dilate(bite, np.ones((3 * SS, 3 * SS), np.uint8))
        fresh = cv2.bitwise_and(edge, m)
        # Impact chips usually leave a hairline fracture running into the part.
        inside_now = cv2.distanceTransform(m, cv2.DIST_L2, 5) / SS
        ys, xs = np.nonzero((inside_now > 1.5) & (inside_now < 3) & (edge > 0))
        if len(xs):
            i = rng.integers(len(xs))
            pts = _random_walk(rng, inside_now > 1.5, (xs[i], ys[i]), rng.uniform(16, 28) * SS, 0.3, 3 * SS)
            cv2.polylines(dark, [pts], False, 255, int(2.4 * SS), cv2.LINE_AA)
            region = cv2.bitwise_or(region, dark)

    # Rotate everything together, then downsample for anti-aliasing.
    ang = rng.uniform(0, 360) if shape == "washer" else rng.uniform(-22, 22)
    R2 = cv2.getRotationMatrix2D((c, c), ang, 1.0)

    def rot(img):
        img = cv2.warpAffine(img.astype(np.float32), R2, (Ds, Ds), flags=cv2.INTER_LINEAR)
        return cv2.resize(img, (D, D), interpolation=cv2.INTER_AREA)

    A = rot(m) / 255.0
    ink, rust, chipedge, reg = rot(dark) / 255.0, rot(spot), rot(fresh) / 255.0, rot(region) / 255.0

    # Metal look: base colour x lamp gradient x brushed grain + specular band + bevel from the outline.
    lx, ly = scene.light_dir
    base = np.array(METALS[rng.integers(len(METALS))], np.float32) * rng.uniform(0.85, 1.08)
    yy, xx = np.mgrid[0:D, 0:D].astype(np.float32) - D / 2
    grad = 1 + 0.25 * (xx * lx + yy * ly) / (D / 2)
    brushed = cv2.GaussianBlur(rng.normal(0, 1, (D, D)).astype(np.float32), (21, 1), 0)
    Mr = cv2.getRotationMatrix2D((D / 2, D / 2), ang, 1.0)
    brushed = cv2.warpAffine(brushed, Mr, (D, D), borderMode=cv2.BORDER_REFLECT) * 0.09
    sa = rng.uniform(0, math.pi)
    proj = xx * math.cos(sa) + yy * math.sin(sa)
    spec = 45 * np.exp(-((proj - rng.uniform(-20, 20)) ** 2) / (2 * rng.uniform(6, 14) ** 2))
    Ab = cv2.GaussianBlur(A, (0, 0), 1.2)
    gx, gy = cv2.Sobel(Ab, cv2.CV_32F, 1, 0), cv2.Sobel(Ab, cv2.CV_32F, 0, 1)
    bevel = -(gx * lx + gy * ly) * 70
    col = base * (grad * (1 + brushed))[..., None] + (spec * rng.uniform(0.4, 1.0) + bevel)[..., None]

    if not defective and rng.random() < 0.4:
        # Harmless oil smudge on good parts, so "any blemish" is not a shortcut to "defect".
        blob = np.zeros((D, D), np.float32)
        cv2.circle(blob, (int(D / 2 + rng.uniform(-15, 15)), int(D / 2 + rng.uniform(-12, 12))),
                   int(rng.uniform(8, 16)), 1.0, -1)
        col *= 1 - 0.07 * cv2.GaussianBlur(blob, (0, 0), 5)[..., None]
    if kind in ("crack", "scratch", "chip"):
        dv = rng.uniform(18, 40) if kind != "chip" else rng.uniform(30, 50)
        rim = np.roll(np.roll(ink, 1, 0), 1, 1) * (1 - ink)  # lit lip of the crack
        col = col * (1 - ink[..., None] * 0.92) + dv * ink[..., None] * 0.92 + 30 * rim[..., None]
    elif kind == "rust":
        mott = 1 + 0.25 * cv2.GaussianBlur(rng.normal(0, 1, (D, D)).astype(np.float32), (0, 0), 1.2)
        core = np.clip(cv2.GaussianBlur(rust, (0, 0), 2) * 1.3 - 0.3, 0, 1)
        rc = (np.array([38, 78, 150], np.float32) * (1 - 0.45 * core[..., None])) * mott[..., None]
        col = col * (1 - rust[..., None]) + rc * rust[..., None]
    elif kind == "burn":
        halo = np.clip(cv2.GaussianBlur(rust, (0, 0), 3) * 1.6, 0, 1)
        col = col * (1 - 0.5 * halo[..., None]) + np.array([60, 60, 95], np.float32) * 0.5 * halo[..., None]
        col = col * (1 - rust[..., None] * 0.85) + np.array([26, 26, 30], np.float32) * rust[..., None] * 0.85
    if kind == "chip":
        col = col + 75 * chipedge[..., None]
    col = np.clip(col, 0, 255).astype(np.float32)

    sh = cv2.warpAffine(A, np.float32([[1, 0, scene.shadow_off[0]], [0, 1, scene.shadow_off[1]]]), (D, D))
    sh = cv2.GaussianBlur(sh, (0, 0), scene.shadow_sigma) * scene.shadow_strength
    box = _box_of(A)
    dbox = _box_of(reg, 0.25) if kind else None
    return Part(colour=col, alpha=A, shadow=sh, box=box, defective=bool(defective),
                defect_kind=kind, defect_box=dbox)


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

def random_frames(seed, n, defect_rate=0.45, per_scene=16):
    """Independent frames with wide variety (belt shade, light, blur, part count) for training."""
    rng = np.random.default_rng([seed, 11])
    scene, pool = None, []
    for i in range(n):
        if i % per_scene == 0:
            scene = make_scene(rng, wide=True)
            pool = [make_part(rng, scene, rng.random() < defect_rate) for _ in range(10)]
        k = int(rng.choice([0, 1, 2, 3, 4], p=[0.04, 0.24, 0.36, 0.26, 0.10]))
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
