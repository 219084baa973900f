"""--truth: ground-truth boxes per frame, and precision, recall and mAP from pycocotools.

Three label formats, each mapped to frames of the replayed video:
- COCO JSON (a .json file): an image's frame is its `frame_id` key, else the last number in
  its `file_name` (frame_000123.jpg is frame 123); categories are matched to the model's
  labels by name.
- A folder of YOLO .txt files, one per frame, named by frame number (000123.txt or
  frame_123.txt): `class cx cy w h` per line, normalised to the frame, `class` being the
  model's class index. An empty file is a labelled frame with nothing in it.
- JSON lines like the demo's conveyor.truth.jsonl: {"frame_id": N, "objects": [{"label",
  "box": [x1, y1, x2, y2]}]} in frame pixels.
Only frames that were both labelled and decided `ok` are evaluated.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgert.errors import UsageError
from edgert.records import Decision

Box = tuple[float, float, float, float]
Truth = dict[int, list[tuple[str, Box]]]   # frame → (label, x1 y1 x2 y2 in pixels)


def _bad(path: Path, what: str) -> UsageError:
    return UsageError(f"{path}: {what}; give COCO JSON, a folder of YOLO .txt files named by "
                      "frame number, or JSON lines of {\"frame_id\", \"objects\"}")


def _frame_number(name: str) -> int | None:
    found = re.findall(r"\d+", Path(name).stem)
    return int(found[-1]) if found else None


def load(path: Path, labels: Sequence[str], size_wh: tuple[int, int]) -> Truth:
    """The labels at `path` as boxes per frame in pixels; a malformed file is named."""
    if path.is_dir():
        return _yolo(path, labels, size_wh)
    if not path.is_file():
        raise _bad(path, "there is no such file or folder")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _bad(path, f"cannot be read ({e})") from None
    if path.suffix.lower() == ".json":
        return _coco(path, text)
    return _lines(path, text)


def _box(path: Path, where: str, raw: Any) -> Box:
    try:
        x1, y1, x2, y2 = (float(v) for v in raw)
    except (TypeError, ValueError):
        raise _bad(path, f"{where}: a box must be four numbers") from None
    return x1, y1, x2, y2


def _coco(path: Path, text: str) -> Truth:
    try:
        data = json.loads(text)
        cats = {c["id"]: c["name"] for c in data["categories"]}
        frames: dict[Any, int] = {}
        for im in data["images"]:
            fid = im.get("frame_id", _frame_number(str(im.get("file_name", ""))))
            if fid is None:
                raise _bad(path, f"image {im['id']} has neither frame_id nor a frame number "
                                 "in its file_name")
            frames[im["id"]] = int(fid)
        truth: Truth = {f: [] for f in frames.values()}
        for a in data["annotations"]:
            x, y, w, h = _box(path, f"annotation {a.get('id')}", a["bbox"])
            truth[frames[a["image_id"]]].append((cats[a["category_id"]], (x, y, x + w, y + h)))
    except UsageError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _bad(path, f"not COCO detection JSON ({type(e).__name__}: {e})") from None
    return truth


def _lines(path: Path, text: str) -> Truth:
    truth: Truth = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            truth[int(rec["frame_id"])] = [(str(o["label"]), _box(path, f"line {n}", o["box"]))
                                           for o in rec["objects"]]
        except UsageError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise _bad(path, f"line {n} is not a frame's labels ({type(e).__name__}: {e})") \
                from None
    return truth


def _yolo(folder: Path, labels: Sequence[str], size_wh: tuple[int, int]) -> Truth:
    w, h = size_wh
    truth: Truth = {}
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise _bad(folder, "the folder holds no .txt label file")
    for f in files:
        fid = _frame_number(f.name)
        if fid is None:
            raise _bad(f, "the file name has no frame number")
        objs = []
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                c, cx, cy, bw, bh = line.split()[:5]
                cls, (cx, cy, bw, bh) = int(c), (float(v) for v in (cx, cy, bw, bh))
                label = labels[cls]
            except (ValueError, IndexError):
                raise _bad(f, f"line {n} is not `class cx cy w h` with a class index of the "
                              f"model's {len(labels)} labels") from None
            objs.append((label, ((cx - bw / 2) * w, (cy - bh / 2) * h,
                                 (cx + bw / 2) * w, (cy + bh / 2) * h)))
        truth[fid] = objs
    return truth


def evaluate(truth: Truth, decisions: Sequence[Decision], labels: Sequence[str],
             frames_read: int, source: Path) -> dict[str, Any]:
    """Per-class precision and recall at IoU 0.5 (at the config's thresholds, as published)
    and mAP@0.5 and mAP@0.5:0.95, as pycocotools computes them."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    beyond = sorted(f for f in truth if f < 0 or f >= frames_read)
    if beyond:
        raise UsageError(f"{source}: {len(beyond)} labelled frame(s) match no replayed frame "
                         f"(first: frame {beyond[0]}; the recording has frames 0 to "
                         f"{frames_read - 1}); label this recording's frames")
    unknown = sorted({lab for objs in truth.values() for lab, _ in objs} - set(labels))
    if unknown:
        raise UsageError(f"{source}: label {unknown[0]!r} is not one of the model's labels "
                         f"({', '.join(labels)}); rename it in the labels")
    decided = {d.verdict.frame_id: d for d in decisions if d.status == "ok"}
    frames = sorted(f for f in truth if f in decided)
    if not frames:
        raise UsageError(f"{source}: no labelled frame was decided; check the frame numbers")
    cat = {lab: i + 1 for i, lab in enumerate(labels)}
    gt = {"images": [{"id": f} for f in frames],
          "categories": [{"id": i, "name": lab} for lab, i in cat.items()], "annotations": []}
    for f in frames:
        for lab, (x1, y1, x2, y2) in truth[f]:
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": f,
                                      "category_id": cat[lab], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                      "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    dt = [{"image_id": f, "category_id": cat[d.label], "score": d.score,
           "bbox": [d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]]}
          for f in frames for d in decided[f].verdict.detections
          if d.box is not None and d.label in cat]
    with contextlib.redirect_stdout(io.StringIO()):   # pycocotools narrates on stdout
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        res = coco.loadRes(dt) if dt else COCO()
        if not dt:
            res.dataset = {"images": gt["images"], "categories": gt["categories"],
                           "annotations": []}
            res.createIndex()
        ev = COCOeval(coco, res, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"frames_evaluated": len(frames), "labelled_frames_not_decided":
            len([f for f in truth if f not in decided]),
            "map50": round(float(ev.stats[1]), 4), "map50_95": round(float(ev.stats[0]), 4),
            "per_class": _per_class(ev, cat)}


def _per_class(ev: Any, cat: dict[str, int]) -> dict[str, dict[str, Any]]:
    prec = ev.eval["precision"]          # [IoU, recall, class, area, maxDets]
    k_of = {c: k for k, c in enumerate(ev.params.catIds)}
    tp: dict[int, int] = {}
    fp: dict[int, int] = {}
    npos: dict[int, int] = {}
    for e in ev.evalImgs:                # the evaluator's own matches at IoU 0.5, all areas
        if e is None or e["aRng"] != ev.params.areaRng[0] or e["maxDet"] != ev.params.maxDets[-1]:
            continue
        c = e["category_id"]
        m, ig = np.asarray(e["dtMatches"])[0], np.asarray(e["dtIgnore"])[0].astype(bool)
        tp[c] = tp.get(c, 0) + int(((m > 0) & ~ig).sum())
        fp[c] = fp.get(c, 0) + int(((m == 0) & ~ig).sum())
        npos[c] = npos.get(c, 0) + int((~np.asarray(e["gtIgnore"]).astype(bool)).sum())
    out = {}
    for lab, c in cat.items():
        k = k_of[c]
        p50, pall = prec[0, :, k, 0, -1], prec[:, :, k, 0, -1]
        t, f, n = tp.get(c, 0), fp.get(c, 0), npos.get(c, 0)
        out[lab] = {"truth": n, "detections": t + f,
                    "precision": round(t / (t + f), 4) if t + f else None,
                    "recall": round(t / n, 4) if n else None,
                    "map50": round(float(p50[p50 > -1].mean()), 4) if (p50 > -1).any() else None,
                    "map50_95": round(float(pall[pall > -1].mean()), 4)
                    if (pall > -1).any() else None}
    return out
