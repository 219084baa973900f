"""Tiny anchor-free YOLOv8-style detector for the demo: model, TAL-lite assignment, training and ONNX export."""
import copy
import math
import random
import time

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import render
from .evaluate import IMGSZ, NAMES, letterbox

STRIDES = (8, 16)
NC = len(NAMES)


# ----------------------------------------------------------------------------- model

class Conv(nn.Module):
    def __init__(self, c1, c2, k=3, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, 3), Conv(c, c, 3)

    def forward(self, x):
        return x + self.cv2(self.cv1(x))


class C2f(nn.Module):
    """YOLOv8's split-transform-concat block: cheap, and gradients reach early layers well."""

    def __init__(self, c1, c2, n=1):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.m = nn.ModuleList(Bottleneck(self.c) for _ in range(n))
        self.cv2 = Conv((2 + n) * self.c, c2, 1)

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Head(nn.Module):
    """Decoupled head for one level: separate box and class branches, as in YOLOv8 (but slimmer)."""

    def __init__(self, c, hidden, stride):
        super().__init__()
        self.box = nn.Sequential(Conv(c, hidden), nn.Conv2d(hidden, 4, 1))
        self.cls = nn.Sequential(Conv(c, hidden), nn.Conv2d(hidden, NC, 1))
        # Start with ~3-stride boxes and a rare-object class prior so early assignment is sensible.
        nn.init.constant_(self.box[-1].bias, math.log(math.expm1(3.0)))
        nn.init.constant_(self.cls[-1].bias, math.log(5 / NC / (IMGSZ / stride) ** 2))

    def forward(self, x):
        return self.box(x), self.cls(x)


class DemoDet(nn.Module):
    """Stride-8 and stride-16 outputs; parts are 30-65 px at the 320 input, so no stride-32 level."""

    def __init__(self, w=(16, 32, 64, 80), hidden=32):
        super().__init__()
        self.stem = Conv(3, w[0], 3, 2)                                      # /2
        self.s2 = Conv(w[0], w[1], 3, 2)                                     # /4
        self.s3 = nn.Sequential(Conv(w[1], w[2], 3, 2), C2f(w[2], w[2]))     # /8
        self.s4 = nn.Sequential(Conv(w[2], w[3], 3, 2), C2f(w[3], w[3]))     # /16
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n3 = C2f(w[3] + w[2], w[2])   # context from /16 helps tell a defect from belt dirt
        self.heads = nn.ModuleList([Head(w[2], hidden, 8), Head(w[3], hidden, 16)])
        anchors, strides = make_anchors()
        self.register_buffer("anchors", anchors, persistent=False)
        self.register_buffer("strides", strides, persistent=False)
        self.export = False

    def forward(self, x):
        p3 = self.s3(self.s2(self.stem(x)))
        p4 = self.s4(p3)
        f3 = self.n3(torch.cat([self.up(p4), p3], 1))
        boxes, logits = [], []
        for f, head in zip((f3, p4), self.heads):
            b, c = head(f)
            boxes.append(b.flatten(2))
            logits.append(c.flatten(2))
        box_raw = torch.cat(boxes, 2)           # [B, 4, N] raw distances
        logit = torch.cat(logits, 2)            # [B, NC, N]
        if not self.export:
            # Training may run on crops, so anchors follow the actual feature-map sizes.
            anchors, strides = make_anchors(x.shape[2], x.shape[3])
            ltrb = F.softplus(box_raw) * strides
            return ltrb.transpose(1, 2), logit.transpose(1, 2), anchors
        ltrb = F.softplus(box_raw) * self.strides
        # Ultralytics layout: cx, cy, w, h in input pixels, then sigmoided class scores.
        a = self.anchors.T[None]
        lt, rb = ltrb[:, :2], ltrb[:, 2:]
        cxcy = a + (rb - lt) / 2
        wh = lt + rb
        return torch.cat([cxcy, wh, logit.sigmoid()], 1)


def make_anchors(h=IMGSZ, w=IMGSZ):
    pts, strides = [], []
    for s in STRIDES:
        ys, xs = torch.meshgrid(torch.arange(h // s), torch.arange(w // s), indexing="ij")
        pts.append(torch.stack([xs, ys], -1).reshape(-1, 2).float().add(0.5).mul(s))
        strides.append(torch.full((xs.numel(),), float(s)))
    return torch.cat(pts), torch.cat(strides)


def dist2box(anchors, ltrb):
    return torch.cat([anchors - ltrb[..., :2], anchors + ltrb[..., 2:]], -1)


# ----------------------------------------------------------------------------- loss

def box_iou(a, b, giou=False):
    """Elementwise IoU / GIoU for broadcastable [..., 4] xyxy tensors."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    union = area_a + area_b - inter + 1e-7
    iou = inter / union
    if not giou:
        return iou
    hull = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).prod(-1) + 1e-7
    return iou - (hull - union) / hull


@torch.no_grad()
def assign(scores, pboxes, anchors, gt, gl, gv, topk=10, alpha=0.5, beta=6.0):
    """TAL-lite: per truth, the top-k anchors inside its box by score^a * IoU^b (YOLOv8's recipe)."""
    B, N, _ = scores.shape
    M = gt.shape[1]
    if M == 0:
        z = torch.zeros(B, N, dtype=torch.bool)
        return z, torch.zeros(B, N, 4), torch.zeros(B, N, NC)
    ax, ay = anchors[:, 0], anchors[:, 1]
    x1, y1, x2, y2 = (gt[..., i, None] for i in range(4))
    inside = (ax > x1) & (ax < x2) & (ay > y1) & (ay < y2) & gv[..., None]            # B,M,N
    ious = box_iou(gt[:, :, None, :], pboxes[:, None, :, :]).clamp(min=0) * inside    # B,M,N
    sc = scores.gather(2, gl[:, None, :].expand(B, N, M)).transpose(1, 2)            # B,M,N
    align = sc.pow(alpha) * ious.pow(beta) * inside
    idx = align.topk(topk, dim=-1).indices
    mask = torch.zeros_like(inside).scatter_(-1, idx, True) & inside
    # An anchor claimed by two truths keeps the one it overlaps best.
    multi = mask.sum(1) > 1
    if multi.any():
        best = F.one_hot((ious * mask).argmax(1), M).transpose(1, 2).bool()
        mask = torch.where(multi[:, None, :], best & mask, mask)
    fg = mask.any(1)
    gi = mask.float().argmax(1)
    tbox = gt.gather(1, gi[..., None].expand(B, N, 4))
    tlbl = gl.gather(1, gi)
    align = align * mask
    norm = (align * (ious * mask).amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + 1e-9)).amax(1)
    tscore = F.one_hot(tlbl, NC).float() * (norm * fg)[..., None]
    return fg, tbox, tscore


def compute_loss(ltrb, logits, anchors, targets):
    """targets: [B, M, 6] = x1, y1, x2, y2, class, kind (1 truth, 2 ignore, 0 padding)."""
    pboxes = dist2box(anchors, ltrb)
    gt, gl, kind = targets[..., :4], targets[..., 4].long(), targets[..., 5]
    fg, tbox, tscore = assign(logits.detach().sigmoid(), pboxes.detach(), anchors, gt, gl, kind == 1)
    # Anchors on an ambiguous object are not told "background" either.
    ax, ay = anchors[:, 0], anchors[:, 1]
    in_ign = ((ax > gt[..., 0, None]) & (ax < gt[..., 2, None]) & (ay > gt[..., 1, None])
              & (ay < gt[..., 3, None]) & (kind == 2)[..., None]).any(1)
    weight = (~in_ign | fg).float()[..., None]
    tsum = tscore.sum().clamp(min=1)
    cls = (F.binary_cross_entropy_with_logits(logits, tscore, reduction="none") * weight).sum() / tsum
    if fg.any():
        w = tscore.sum(-1)[fg]
        box = ((1 - box_iou(pboxes[fg], tbox[fg], giou=True)) * w).sum() / tsum
    else:
        box = pboxes.sum() * 0
    return cls + 5.0 * box, cls.detach(), box.detach()


# ----------------------------------------------------------------------------- data

# The letterboxed 640x360 frame occupies rows 70..250 of the 320x320 input; everything else is pad.
# Storing and mostly training on rows 64..256 (a multiple of the largest stride) saves 40% compute.
CROP_TOP, CROP_H = 64, 192


def build_set(seed, n, compress):
    """Render n frames and letterbox them exactly as the runtime will; targets in input pixels."""
    rng = np.random.default_rng([seed, 5])
    imgs = np.empty((n, 3, CROP_H, IMGSZ), np.uint8)
    targets, frames_truth = [], []
    for i, (frame, objs) in enumerate(render.random_frames(seed, n)):
        if compress and rng.random() < 0.85:
            # The clip reaches the model through an mp4v encode; JPEG blocks are a cheap stand-in.
            q = int(rng.integers(30, 90))
            frame = cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, q])[1], 1)
        rgb, (s, left, top) = letterbox(frame)
        assert np.all(rgb[:CROP_TOP] == 114) and np.all(rgb[CROP_TOP + CROP_H:] == 114)
        imgs[i] = rgb[CROP_TOP:CROP_TOP + CROP_H].transpose(2, 0, 1)
        t = [[o["box"][0] * s + left, o["box"][1] * s + top, o["box"][2] * s + left, o["box"][3] * s + top,
              NAMES.index(o["label"]), 2 if o["ignore"] else 1] for o in objs]
        targets.append(np.array(t, np.float32).reshape(-1, 6))
        if not compress:
            frames_truth.append((frame, objs))
    return imgs, targets, frames_truth


def collate(imgs, targets, idx, flip, full):
    """Batch of crops, or (full=True) of complete 320x320 inputs so the pad bands are seen too."""
    x = torch.from_numpy(imgs[idx]).float().div_(255)
    M = max(1, max(len(targets[i]) for i in idx))
    t = torch.zeros(len(idx), M, 6)
    for j, i in enumerate(idx):
        if len(targets[i]):
            t[j, :len(targets[i])] = torch.from_numpy(targets[i])
    if full:
        pad = 114 / 255
        x = F.pad(x, (0, 0, CROP_TOP, IMGSZ - CROP_TOP - CROP_H), value=pad)
    else:
        t[..., [1, 3]] -= CROP_TOP
    if flip.any():
        # Mirror images: a defect looks the same either way round, and it doubles the views cheaply.
        x[flip] = x[flip].flip(-1)
        tf = t[flip]
        x1 = IMGSZ - tf[..., 2]
        tf[..., 2] = IMGSZ - tf[..., 0]
        tf[..., 0] = x1
        t[flip] = tf
    t[t[..., 5] == 0] = 0
    return x.contiguous(memory_format=torch.channels_last), t


# ----------------------------------------------------------------------------- training

def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)


def param_groups(model, wd):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 4 else no_decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


class EMA:
    """Exponential moving average of weights and BN statistics, with YOLO's ramp-up.

    The ramp matters here: with only a few hundred steps a fixed decay would keep a large share
    of the random initial weights.
    """

    def __init__(self, model, decay=0.99, tau=50):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        src = model.state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])


def train(model, imgs, targets, epochs, batch, lr, seed, log=print):
    model = model.to(memory_format=torch.channels_last)  # ~20% faster convolutions on CPU
    opt = torch.optim.AdamW(param_groups(model, 5e-4), lr=lr, betas=(0.9, 0.999))
    steps_per_epoch = len(imgs) // batch
    total = epochs * steps_per_epoch
    warm = min(300, total // 10)
    ema = EMA(model)
    g = torch.Generator().manual_seed(seed)
    step, t0 = 0, time.time()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(imgs), generator=g).numpy()
        sums = np.zeros(3)
        for b in range(steps_per_epoch):
            idx = perm[b * batch:(b + 1) * batch]
            flip = torch.rand(len(idx), generator=g) < 0.5
            x, t = collate(imgs, targets, idx, flip, full=(step % 8 == 7))
            # Linear warm-up then cosine decay: stable start from scratch, sharp finish.
            f = step / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
            for gr in opt.param_groups:
                gr["lr"] = lr * max(f, 0.02)
            ltrb, logits, anchors = model(x)
            loss, lc, lb = compute_loss(ltrb, logits, anchors, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            ema.update(model)
            sums += [loss.item(), lc.item(), lb.item()]
            step += 1
        s = sums / steps_per_epoch
        log(f"  epoch {ep + 1}/{epochs}  loss {s[0]:.3f} (cls {s[1]:.3f}, box {s[2]:.3f})  "
            f"{time.time() - t0:.0f}s")
    return ema.module, time.time() - t0


# ----------------------------------------------------------------------------- export

def export_onnx(model, path, meta):
    """Export with BN folded into the convolutions; returns max |torch - onnxruntime| on a probe."""
    import onnx
    import onnxruntime as ort
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    model = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    for mod in model.modules():
        if isinstance(mod, Conv):
            mod.conv, mod.bn = fuse_conv_bn_eval(mod.conv, mod.bn), nn.Identity()
    model.export = True
    x = torch.zeros(1, 3, IMGSZ, IMGSZ)
    torch.onnx.export(model, (x,), path, input_names=["images"], output_names=["output0"],
                      opset_version=17, do_constant_folding=True, dynamo=False)
    m = onnx.load(path)
    del m.metadata_props[:]
    for k, v in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, path)
    probe = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(probe).numpy()
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"images": probe.numpy()})[0]
    return float(np.abs(ref - got).max())
