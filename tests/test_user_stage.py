"""A user stage: the documented three-stage face cascade on real models, its mistakes as
config errors, and a session the guard stops at the deadline."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REPO, edgert, write_config
from onnx_models import heavy_classifier
from test_secondary import FOUR, PHOTOS, decisions, four_boxes, heavy_enough

EXAMPLES = REPO / "docs" / "examples"

CASCADE = PHOTOS + """
[model.stage]
function = "face_cascade:cascade"
options = {{ labels = "{models}/imagenet1000_simple_labels.txt", max_persons = 3 }}
[model.stage.sessions]
faces = "{models}/ultraface_version-slim-320.onnx"
looks = "{models}/mobilenetv2-12-int8.onnx"
[runtime]
budget_ms = 5000
[fail_safe]
action = "stop"
[[outputs]]
type = "jsonl"
path = "out.jsonl"
"""


def test_the_documented_face_cascade_runs_on_real_models(tmp_path: Path, material: Path) -> None:
    models = material / "models"
    cfg = write_config(tmp_path / "d.toml", CASCADE.format(images=material / "images",
                                                           models=models))
    run = edgert("run", str(cfg), cwd=tmp_path, timeout=300,
                 env={"PYTHONPATH": str(EXAMPLES)})
    assert run.returncode == 0, run.stderr
    recs = decisions(tmp_path / "out.jsonl")
    assert {r["status"] for r in recs} == {"ok"}
    persons = [d for r in recs for d in r["detections"]
               if d["label"] == "person" and d["score"] >= 0.5]
    faces = [d["attributes"]["face"] for d in persons]
    assert len(faces) == len(persons) >= 10
    found = [f for f in faces if f.get("label") == "face" and "skipped" not in f]
    not_reached = [f for f in faces if f == {"skipped": "budget"}]
    assert found and not_reached   # max_persons = 3 leaves some out, as the budget would
    with_look = [d for d in persons if "look" in d["attributes"]]
    assert len(with_look) == len(found)   # the third stage ran on every face found, only there
    assert all(d["attributes"]["look"]["label"] for d in with_look)


def test_a_stage_function_that_cannot_be_loaded_is_a_config_error(tmp_path: Path) -> None:
    four_boxes(tmp_path)
    heavy_classifier(tmp_path / "heavy.onnx", size=64, depth=1)
    text = FOUR.format(budget=100).replace("[[model.secondary]]", "[model.stage]\n"
                                           "function = \"no_such_module:refine\"\n"
                                           "[[model.secondary]]")
    cfg = write_config(tmp_path / "d.toml", text)
    run = edgert("check", str(cfg), cwd=tmp_path)
    assert run.returncode == 2
    assert "model.stage.function" in run.stderr and "no_such_module" in run.stderr
    assert "Traceback" not in run.stderr


STAGE = '''
import numpy as np

X = np.zeros((1, 3, 32, 32), np.float32)


def heavy(ctx):
    for _ in range(len(ctx.detections)):   # one heavy run per detection, whatever the budget
        ctx.sessions["heavy"].run(X)
'''


def test_the_guard_stops_a_user_stage_session_at_the_deadline(tmp_path: Path) -> None:
    four_boxes(tmp_path)
    one = heavy_enough(tmp_path / "heavy.onnx", 40.0)   # one run costs more than the budget
    (tmp_path / "mystage.py").write_text(STAGE)
    text = FOUR.format(budget=round(one / 2, 1))
    text = text[:text.index("[[model.secondary]]")] + (
        '[model.stage]\nfunction = "mystage:heavy"\n[model.stage.sessions]\nheavy = "heavy.onnx"\n'
    ) + text[text.index("[runtime]"):]
    cfg = write_config(tmp_path / "d.toml", text)
    run = edgert("run", "--frames", "20", str(cfg), cwd=tmp_path, timeout=300,
                 env={"PYTHONPATH": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stderr.split("summary: ", 1)[1].splitlines()[0])
    assert summary["late_ok"] == 0 and summary["guard"]["runs_stopped"] >= 1
    recs = decisions(tmp_path / "out.jsonl")
    assert any(r["status"] == "fail_safe" and r.get("stage") == "secondary" for r in recs)
