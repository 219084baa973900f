"""Secondary models on crops: the crop kernel against OpenCV, a real detector → classifier
pipeline with a rule on the attribute, and a budget that cuts the secondary stage short."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from conftest import edgert, write_config
from onnx_models import heavy_classifier, yolo_constant
from edgert.config.types import InputConfig
from edgert.preprocess.crops import CropPreprocessor

IMAGENET = InputConfig(resize="stretch", color="rgb", scale=1 / 255,
                       mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def decisions(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()
            if '"edgert.decision/1"' in ln]


def test_a_crop_is_what_cv2_resize_makes_of_it() -> None:
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), np.uint8), (5, 5), 0)
    pre = CropPreprocessor(InputConfig(resize="stretch"), (32, 48), np.uint8, 2, padding=0.0)
    crop = pre.box(np.array([10, 20, 90, 100], np.float32), (120, 160))
    assert crop == (10.0, 20.0, 90.0, 100.0)
    pre.write(1, image, crop)
    want = cv2.resize(image[20:100, 10:90], (48, 32), interpolation=cv2.INTER_LINEAR)
    got = pre.tensor[1].transpose(1, 2, 0)
    # Inside the crop's border (where OpenCV clamps to the crop and we read the frame on).
    diff = np.abs(got[1:-1, 1:-1].astype(int) - want[1:-1, 1:-1].astype(int))
    assert diff.max() <= 1, diff.max()
    assert not pre.tensor[0].any()   # the other slot untouched

    last = CropPreprocessor(InputConfig(resize="stretch"), (32, 48), np.uint8, 1, 0.0,
                            channels_last=True)
    last.write(0, image, crop)
    assert np.array_equal(last.tensor[0], got)


def test_letterboxed_crops_keep_their_aspect_and_padding_grows_the_box() -> None:
    image = np.full((100, 200, 3), 200, np.uint8)
    pre = CropPreprocessor(InputConfig(resize="letterbox", pad_value=114), (32, 32), np.uint8,
                           1, padding=0.5)
    crop = pre.box(np.array([80, 40, 120, 60], np.float32), (100, 200))
    assert crop == (60.0, 30.0, 140.0, 70.0)   # 40×20 grown by half a side each way
    pre.write(0, image, crop)
    planes = pre.tensor[0]
    assert (planes[:, :8] == 114).all() and (planes[:, 24:] == 114).all()   # 80×40 → 32×16
    assert (planes[:, 8:24] == 200).all()
    edge = pre.box(np.array([0, 0, 10, 10], np.float32), (100, 200))
    assert edge == (0.0, 0.0, 15.0, 15.0)   # clipped to the frame on the top and left


# YOLOX-nano on the shared photos; what runs after it follows.
PHOTOS = """
device_id = "secondary"
[source]
url = "images:{images}"
mode = "every"
[model]
path = "{models}/yolox_nano_coco_416.onnx"
family = "yolox"
labels = "{models}/coco80.names"
conf = 0.3
[model.input]
align = "top_left"
"""
PEOPLE = PHOTOS + """
[[model.secondary]]
name = "clothing"
on = ["person"]
min_score = 0.3
path = "{models}/mobilenetv2-12-int8.onnx"
family = "classify"
labels = "{models}/imagenet1000_simple_labels.txt"
conf = 0.1
max_crops = 4
padding = 0.0
[model.secondary.input]
resize = "stretch"
color = "rgb"
scale = 0.00392156862745098
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
[runtime]
budget_ms = 5000
[[rules]]
name = "ballplayer"
labels = ["person"]
attribute = "clothing:baseball player"
action = "flag"
[fail_safe]
action = "stop"
[[outputs]]
type = "jsonl"
path = "out.jsonl"
"""


def test_persons_get_the_classifiers_attribute_and_a_rule_fires_on_it(tmp_path: Path,
                                                                      material: Path) -> None:
    shared = material
    models = shared / "models"
    cfg = write_config(tmp_path / "d.toml", PEOPLE.format(images=shared / "images", models=models))
    run = edgert("run", str(cfg), cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    recs = decisions(tmp_path / "out.jsonl")
    assert len(recs) == len(list((shared / "images").glob("*.jpg")))
    names = sorted((shared / "images").glob("*.jpg"))

    # Independently: the same classifier on crops cut and resized by OpenCV.
    session = ort.InferenceSession(str(models / "mobilenetv2-12-int8.onnx"),
                                   providers=["CPUExecutionProvider"])
    labels = (models / "imagenet1000_simple_labels.txt").read_text().splitlines()
    mean, std = np.array(IMAGENET.mean), np.array(IMAGENET.std)
    agree = total = 0
    for rec in recs:
        image = cv2.imread(str(names[rec["frame_id"]]))
        people = [d for d in rec["detections"] if d["label"] == "person" and d["score"] >= 0.3]
        for rank, d in enumerate(people):
            attr = d["attributes"]["clothing"]
            if rank >= 4:
                assert attr == {"skipped": "max_crops"}
                continue
            x1, y1, x2, y2 = (int(round(v)) for v in d["box"])
            crop = cv2.resize(image[y1:y2, x1:x2], (224, 224), interpolation=cv2.INTER_LINEAR)
            x = ((crop[:, :, ::-1] / 255.0 - mean) / std).transpose(2, 0, 1)[None]
            logits = session.run(None, {"input": x.astype(np.float32)})[0][0]
            prob = np.exp(logits - logits.max())
            prob /= prob.sum()
            top5 = [labels[i] for i in np.argsort(-prob)[:5]]
            total += 1
            agree += attr["label"] in top5
            if prob.max() >= 0.5:   # a confident answer must be the same answer
                assert attr["label"] == top5[0], (attr, top5, prob.max())
        assert all("attributes" not in d for d in rec["detections"] if d["label"] != "person")
        flagged = any(d.get("attributes", {}).get("clothing", {}).get("label") == "baseball player"
                      and "skipped" not in d["attributes"]["clothing"] for d in people)
        assert rec["action"] == ("flag" if flagged else "none"), rec
    # Within their top five: low-confidence answers flip on a grey level or a box's rounding.
    assert total >= 20 and agree >= 0.9 * total, (agree, total)
    assert any(r["action"] == "flag" for r in recs)
    assert all("secondary" in r["latency_ms"] for r in recs if r["detections"])


FOUR = """
device_id = "tight"
[source]
url = "pattern:"
fps = 30
[model]
path = "det.onnx"
labels = "labels.txt"
[[model.secondary]]
name = "heavy"
path = "heavy.onnx"
family = "classify"
max_crops = 4
[model.secondary.input]
resize = "stretch"
[runtime]
budget_ms = {budget}
loop_priority = "normal"
[fail_safe]
action = "stop"
[[outputs]]
type = "jsonl"
path = "out.jsonl"
"""


def four_boxes(tmp_path: Path, n: int = 4) -> None:
    """A detector that always finds `n` separate parts, scored 0.9, 0.85, … (n ≤ 8)."""
    pred = np.zeros((1, 6, 32), np.float32)
    pred[0, :4, :] = np.array([32, 32, 4, 4], np.float32)[:, None]
    pred[0, 4:, :] = 0.01
    for i in range(n):
        pred[0, :4, i] = (8 + 16 * (i % 4), 16 + 32 * (i // 4), 12, 12)
        pred[0, 4, i] = 0.9 - 0.05 * i
    yolo_constant(tmp_path / "det.onnx", pred)
    (tmp_path / "labels.txt").write_text("part\ndefect\n")


def secondary_cost_ms(path: Path) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.zeros((1, 3, 32, 32), np.float32)
    import time
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        session.run(None, {"input": x})
        times.append(time.perf_counter() - t0)
    return sorted(times)[3] * 1e3


def heavy_enough(path: Path, ms: float) -> float:
    """A heavy classifier whose one-crop run costs at least `ms` on this machine; its cost."""
    depth = 1
    while True:
        heavy_classifier(path, size=512, depth=depth)
        one = secondary_cost_ms(path)
        if one >= ms or depth >= 64:
            return one
        depth *= 2


def test_a_tight_budget_cuts_the_secondary_stage_short_never_an_ok_late(tmp_path: Path) -> None:
    four_boxes(tmp_path, 8)
    one = heavy_enough(tmp_path / "heavy.onnx", 15.0)
    # Room for about four crops of eight: whatever the load does to a crop's cost (short of
    # halving it or making it four times dearer), some run and the rest are marked; never late.
    budget = round(4 * one + 5, 1)
    cfg = write_config(tmp_path / "d.toml", FOUR.format(budget=budget).replace(
        "max_crops = 4", "max_crops = 8"))
    run = edgert("run", "--frames", "90", str(cfg), cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stderr.split("summary: ", 1)[1].splitlines()[0])
    assert summary["late_ok"] == 0
    recs = decisions(tmp_path / "out.jsonl")
    ok = [r for r in recs if r["status"] == "ok"]
    marks = [[d["attributes"]["heavy"] for d in r["detections"]] for r in ok]
    assert all(len(m) == 8 for m in marks)
    # Crops are run in the order of the primary's score: a run crop never follows a skipped one.
    for m in marks:
        skipped = ["skipped" in a for a in m]
        assert skipped == sorted(skipped), m
    cut = [m for m in marks if any(a.get("skipped") == "budget" for a in m)]
    assert len(cut) >= len(ok) // 2, (len(cut), len(ok), budget)
    assert any(any("skipped" not in a for a in m) for m in marks)
    for r in ok:
        assert (r["decided_at"] - r["captured_at"]) * 1e3 <= budget


def test_the_guard_stops_a_secondary_run_at_the_deadline(tmp_path: Path) -> None:
    four_boxes(tmp_path)
    one = heavy_enough(tmp_path / "heavy.onnx", 40.0)
    budget = round(one / 2, 1)   # the primary fits many times over; not even one crop does
    cfg = write_config(tmp_path / "d.toml", FOUR.format(budget=budget))
    run = edgert("run", "--frames", "320", str(cfg), cwd=tmp_path, timeout=300)   # > PROBE_AFTER
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stderr.split("summary: ", 1)[1].splitlines()[0])
    assert summary["late_ok"] == 0
    # Not one crop is expected to fit, but every so often one is tried anyway (costs learned
    # on a busy spell must not shut the stage for good): the guard stops it at the deadline.
    assert summary["guard"]["runs_stopped"] >= 1
    recs = decisions(tmp_path / "out.jsonl")
    stopped = [r for r in recs if r["status"] == "fail_safe" and r.get("stage") == "secondary"]
    assert stopped, [(r["status"], r.get("cause"), r.get("stage")) for r in recs[:10]]
    ok = [r for r in recs if r["status"] == "ok"]
    # Otherwise the stage is not started: ok records with every crop marked (a probe that
    # happened to finish in time may have run one).
    untouched = [r for r in ok if all(d["attributes"]["heavy"] == {"skipped": "budget"}
                                      for d in r["detections"])]
    assert ok and len(untouched) >= 0.8 * len(ok)


DECODER = '''
def read(outputs, ctx):
    # One answer per crop, in the dict form of the decoder contract.
    return {"boxes": [[0, 0, 1, 1]], "scores": [0.8], "class_ids": [1]}
'''


def with_decoder(tmp_path: Path, code: str, family: str, extra: str) -> list[dict]:
    """Two parts, each cropped for a secondary decoder of one's own (module `code`): the records."""
    four_boxes(tmp_path, 2)
    heavy_classifier(tmp_path / "heavy.onnx", size=64, depth=1)
    (tmp_path / f"{family.split(':')[0]}.py").write_text(code)
    text = FOUR.format(budget=2000).replace('family = "classify"', f'family = "{family}"\n{extra}')
    cfg = write_config(tmp_path / "d.toml", text)
    run = edgert("run", "--frames", "4", str(cfg), cwd=tmp_path, timeout=300,
                 env={"PYTHONPATH": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    return decisions(tmp_path / "out.jsonl")


def test_a_secondary_decoder_of_ones_own_names_its_classes(tmp_path: Path) -> None:
    (tmp_path / "kinds.txt").write_text("plain\nstriped\n")
    recs = with_decoder(tmp_path, DECODER, "mydecoder:read", 'labels = "kinds.txt"')
    assert [d["attributes"]["heavy"] for r in recs for d in r["detections"]] == \
        [{"label": "striped", "class_id": 1, "score": 0.8}] * 2 * len(recs)


LANDMARKS = '''
def corners(outputs, ctx):
    # Two landmarks at the crop input's corners (32 x 32), in the crop's input pixels.
    return {"boxes": [[0, 0, 32, 32]], "scores": [0.9], "class_ids": [0],
            "keypoints": [[[0.0, 0.0, 0.9], [32.0, 32.0, 0.8]]]}
'''


def test_a_secondary_landmarks_decoder_gives_points_in_frame_pixels(tmp_path: Path) -> None:
    for rec in with_decoder(tmp_path, LANDMARKS, "marks:corners", "padding = 0.0"):
        for d in rec["detections"]:
            x1, y1, x2, y2 = d["box"]
            kps = d["attributes"]["heavy"]["keypoints"]
            assert abs(kps[0][0] - x1) < 0.2 and abs(kps[0][1] - y1) < 0.2, (kps, d["box"])
            assert abs(kps[1][0] - x2) < 0.2 and abs(kps[1][1] - y2) < 0.2, (kps, d["box"])
            assert [k[2] for k in kps] == [0.9, 0.8]
