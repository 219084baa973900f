"""Escalation: the heavier model runs on a frame only when the primary is unsure and it fits;
its detections then decide, and the record says so."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import edgert, write_config
from onnx_models import matmul_chain, one_box_pred, yolo_constant

NAMES = {"names": "{0: 'part', 1: 'defect'}"}
CONFIG = """
device_id = "escalate"
[source]
url = "pattern:"
fps = 30
[model]
path = "light.onnx"
[model.escalate]
path = "heavy.onnx"
band = [0.3, 0.6]
[runtime]
budget_ms = {budget}
loop_priority = "normal"
[[rules]]
name = "defects"
labels = ["defect"]
min_score = 0.7
action = "reject"
[fail_safe]
action = "stop"
[[outputs]]
type = "jsonl"
path = "out.jsonl"
"""


def records(tmp_path: Path, budget: float = 2000, frames: int = 20,
            text: str = CONFIG) -> tuple[list[dict], dict]:
    cfg = write_config(tmp_path / "d.toml", text.format(budget=budget))
    run = edgert("run", "--frames", str(frames), str(cfg), cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stderr.split("summary: ", 1)[1].splitlines()[0])
    recs = [json.loads(ln) for ln in (tmp_path / "out.jsonl").read_text().splitlines()
            if '"edgert.decision/1"' in ln]
    return recs, summary


def test_an_unsure_primary_escalates_and_the_heavier_model_decides(tmp_path: Path) -> None:
    yolo_constant(tmp_path / "light.onnx", one_box_pred(score=0.5), metadata=NAMES)   # unsure
    yolo_constant(tmp_path / "heavy.onnx", one_box_pred(box=(16, 16, 8, 8), score=0.95),
                  metadata=NAMES)
    recs, summary = records(tmp_path)
    assert recs and all(r["status"] == "ok" and r.get("escalated") for r in recs)
    assert all(r["detections"][0]["score"] == 0.95 and r["action"] == "reject" for r in recs)
    assert all("escalate" in r["latency_ms"] for r in recs)
    assert summary["escalate"]["runs"] == len(recs) and summary["late_ok"] == 0


def test_a_score_a_rule_hinges_on_escalates(tmp_path: Path) -> None:
    """0.75 is outside the band but within `hinge` of the rule's min_score 0.7: whether the
    rule matches hinges on it, so the heavier model decides; without `hinge` it would not."""
    yolo_constant(tmp_path / "light.onnx", one_box_pred(score=0.75), metadata=NAMES)
    yolo_constant(tmp_path / "heavy.onnx", one_box_pred(box=(16, 16, 8, 8), score=0.6),
                  metadata=NAMES)
    cfg = CONFIG.replace("band = [0.3, 0.6]", "band = [0.3, 0.6]\nhinge = 0.1")
    recs, summary = records(tmp_path, text=cfg)
    assert recs and all(r.get("escalated") for r in recs)
    assert all(r["detections"][0]["score"] == 0.6 and r["action"] == "none" for r in recs)
    assert summary["escalate"]["unsure_frames"] == len(recs)
    (tmp_path / "out.jsonl").unlink()
    recs, _ = records(tmp_path, frames=5)   # the same files, no hinge: the light model rules
    assert not any(r.get("escalated") for r in recs) and recs[0]["action"] == "reject"


def test_a_sure_primary_decides_alone(tmp_path: Path) -> None:
    yolo_constant(tmp_path / "light.onnx", one_box_pred(score=0.9), metadata=NAMES)   # sure
    yolo_constant(tmp_path / "heavy.onnx", one_box_pred(box=(16, 16, 8, 8), score=0.95),
                  metadata=NAMES)
    recs, summary = records(tmp_path)
    assert recs and not any(r.get("escalated") for r in recs)
    assert all(r["detections"][0]["score"] == 0.9 for r in recs)
    assert summary["escalate"] == {"unsure_frames": 0, "runs": 0, "no_time": 0, "errors": 0}


def test_a_heavier_model_that_would_not_fit_is_not_run(tmp_path: Path) -> None:
    yolo_constant(tmp_path / "light.onnx", one_box_pred(score=0.5), metadata=NAMES)
    matmul_chain(tmp_path / "heavy.onnx", size=512, depth=48,
                 pred=one_box_pred(anchors=64, box=(16, 16, 8, 8), score=0.95), metadata=NAMES)
    recs, summary = records(tmp_path, budget=15, frames=40)
    assert summary["late_ok"] == 0
    ok = [r for r in recs if r["status"] == "ok"]
    # Its cost is known from warm-up: on no frame is it started only to be cut off.
    assert ok and not any(r.get("escalated") for r in ok)
    assert summary["escalate"]["no_time"] >= len(ok) - 2
    assert not any(r.get("stage") == "secondary" for r in recs)


def test_check_says_what_runs_after_the_main_model(tmp_path: Path) -> None:
    yolo_constant(tmp_path / "light.onnx", one_box_pred(score=0.5), metadata=NAMES)
    yolo_constant(tmp_path / "heavy.onnx", one_box_pred(score=0.95), metadata=NAMES)
    cfg = write_config(tmp_path / "d.toml", CONFIG.format(budget=100) + "[motion]\nenabled = true\n")
    run = edgert("check", str(cfg), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "escalate   heavy.onnx 64x64 when a detection scores in [0.3, 0.6)" in run.stdout
    assert "motion     gated: grid [36, 64]" in run.stdout


def test_escalation_mistakes_name_the_key(tmp_path: Path) -> None:
    yolo_constant(tmp_path / "light.onnx", one_box_pred(score=0.5), metadata=NAMES)
    yolo_constant(tmp_path / "heavy.onnx", one_box_pred(classes=3), metadata={
        "names": "{0: 'part', 1: 'defect', 2: 'screw'}"})
    cfg = write_config(tmp_path / "d.toml", CONFIG.format(budget=100))
    run = edgert("check", str(cfg), cwd=tmp_path)
    assert run.returncode == 2 and "model.escalate" in run.stderr and "labels" in run.stderr
    write_config(cfg, CONFIG.format(budget=100).replace("[0.3, 0.6]", "[0.6, 0.3]"))
    run = edgert("check", str(cfg), cwd=tmp_path)
    assert run.returncode == 2 and "model.escalate.band" in run.stderr
    assert "Traceback" not in run.stderr
