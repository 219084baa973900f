"""Runtime-side view of the demo model: letterbox, onnxruntime decode and precision/recall (no torch here)."""
import cv2
import numpy as np

IMGSZ = 320
PAD = 114
NAMES = ("part", "defect")
CONF, NMS_IOU, MATCH_IOU = 0.25, 0.45, 0.5


def letterbox(frame_bgr, size=IMGSZ):
    """Ultralytics-style letterbox; returns the RGB uint8 canvas plus (scale, left, top) to undo it."""
    h, w = frame_bgr.shape[:2]
    s = min(size / h, size / w)
    nw, nh = int(round(w * s)), int(round(h * s))
    resized = cv2.resize(frame_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    left, top = (size - nw) // 2, (size - nh) // 2
    canvas = np.full((size, size, 3), PAD, np.uint8)
    canvas[top:top + nh, left:left + nw] = resized
    return canvas[..., ::-1].copy(), (s, left, top)


def to_input(frame_bgr):
    rgb, meta = letterbox(frame_bgr)
    return (rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255.0), meta


def iou_matrix(a, b):
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def decode(out, meta, frame_w, frame_h):
    """output0 [1, 4+nc, N] -> list of (x1, y1, x2, y2, score, cls) in frame pixels (class-aware NMS)."""
    p = out[0].T
    scores = p[:, 4:]
    cls = scores.argmax(1)
    conf = scores[np.arange(len(p)), cls]
    keep = conf >= CONF
    p, cls, conf = p[keep], cls[keep], conf[keep]
    xyxy = np.concatenate([p[:, :2] - p[:, 2:4] / 2, p[:, :2] + p[:, 2:4] / 2], 1)
    s, left, top = meta
    xyxy = (xyxy - [left, top, left, top]) / s
    xyxy = np.clip(xyxy, 0, [frame_w, frame_h, frame_w, frame_h])
    dets = []
    for c in np.unique(cls):
        idx = np.nonzero(cls == c)[0]
        order = idx[np.argsort(-conf[idx], kind="stable")]
        while len(order):
            i = order[0]
            dets.append((*xyxy[i].tolist(), float(conf[i]), int(c)))
            if len(order) == 1:
                break
            ious = iou_matrix(xyxy[i], xyxy[order[1:]])[0]
            order = order[1:][ious < NMS_IOU]
    return sorted(dets, key=lambda d: -d[4])


class Tally:
    """Per-class TP/FP/FN at IoU >= 0.5 with the right label; `ignore` truths neither count nor penalise."""

    def __init__(self):
        self.tp = np.zeros(len(NAMES), int)
        self.fp = np.zeros(len(NAMES), int)
        self.fn = np.zeros(len(NAMES), int)

    def add(self, dets, truths):
        """truths: dicts with label, box, and optional ignore. Returns per-truth matched class (or None)."""
        boxes = [t["box"] for t in truths]
        labels = [NAMES.index(t["label"]) for t in truths]
        ignore = [t.get("ignore", False) for t in truths]
        taken = [False] * len(truths)
        matched = [None] * len(truths)
        ious = iou_matrix([d[:4] for d in dets], boxes) if dets and truths else np.zeros((len(dets), len(truths)))
        for i, d in enumerate(dets):
            best, best_iou = None, MATCH_IOU
            for j in range(len(truths)):
                if not taken[j] and not ignore[j] and labels[j] == d[5] and ious[i, j] >= best_iou:
                    best, best_iou = j, ious[i, j]
            if best is not None:
                taken[best] = True
                matched[best] = d[5]
                self.tp[d[5]] += 1
                continue
            # A box on an ambiguous object is neither right nor wrong.
            if any(ignore[j] and ious[i, j] >= MATCH_IOU for j in range(len(truths))):
                continue
            self.fp[d[5]] += 1
            for j in range(len(truths)):  # remember what a wrongly-labelled box landed on
                if ious[i, j] >= MATCH_IOU and matched[j] is None:
                    matched[j] = d[5]
        for j in range(len(truths)):
            if not taken[j] and not ignore[j]:
                self.fn[labels[j]] += 1
        return matched

    def summary(self):
        out = {}
        for c, name in enumerate(NAMES):
            tp, fp, fn = self.tp[c], self.fp[c], self.fn[c]
            out[name] = dict(precision=tp / max(tp + fp, 1), recall=tp / max(tp + fn, 1),
                             tp=int(tp), fp=int(fp), fn=int(fn))
        return out


def run_onnx(path, frames_and_truths):
    """Evaluate an exported model with onnxruntime over (BGR frame, truths) pairs."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    tally = Tally()
    for frame, truths in frames_and_truths:
        x, meta = to_input(frame)
        out = sess.run(["output0"], {"images": x})[0]
        tally.add(decode(out, meta, frame.shape[1], frame.shape[0]), truths)
    return tally.summary()
