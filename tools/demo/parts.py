"""Machined-part sprites for the demo renderer: shaded metal with holes, shadows and (optionally) a defect."""
import math
from dataclasses import dataclass

import cv2
import numpy as np

SS = 4  # supersampling factor so part outlines are anti-aliased like a real lens
DEFECT_KINDS = ("crack", "scratch", "chip", "rust", "burn")
METALS = [(168, 166, 162), (188, 188, 192), (176, 170, 158), (150, 152, 156), (110, 150, 178)]


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


def _rounded_rect(img, x0, y0, x1, y1, r, val):
    x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
    r = int(max(1, min(r, (x1 - x0) // 2, (y1 - y0) // 2)))
    cv2.rectangle(img, (x0 + r, y0), (x1 - r, y1), val, -1)
    cv2.rectangle(img, (x0, y0 + r), (x1, y1 - r), val, -1)
    for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
        cv2.circle(img, (cx, cy), r, val, -1, cv2.LINE_8)


def _box_of(alpha, thr=0.5):
    ys, xs = np.nonzero(alpha > thr)
    if len(xs) == 0:
        return None
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


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
