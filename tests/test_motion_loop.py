"""Motion gating in the loop, on the Intel video: unchanged frames skip the model and say so,
and the decisions agree with an ungated replay within the documented tolerance."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import edgert, write_config
from test_tracking import PEOPLE


def replay(tmp_path: Path, material: Path, name: str, extra: str) -> list[dict]:
    video = material / "videos/intel_one-by-one-person-detection.mp4"
    cfg = write_config(tmp_path / f"{name}.toml", PEOPLE.format(
        video=video, model=material / "models/yolox_nano_coco_416.onnx",
        labels=material / "models/coco80.names") + extra)
    proc = edgert("replay", str(video), "--config", str(cfg), "--out", str(tmp_path / name),
                  timeout=600)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(ln) for ln in (tmp_path / name / "decisions.jsonl").read_text().splitlines()
            if '"edgert.decision/1"' in ln]


def test_unchanged_frames_skip_the_model_and_decisions_agree(tmp_path: Path,
                                                            material: Path) -> None:
    plain = replay(tmp_path, material, "plain", "")
    gated = replay(tmp_path, material, "gated", "\n[motion]\nenabled = true\n")
    assert len(plain) == len(gated)
    reused = [r for r in gated if r.get("reused")]
    assert not any(r.get("reused") for r in plain)
    # Long stretches with nobody in the room: most frames are like the last one inferred.
    assert len(reused) >= 0.3 * len(gated), (len(reused), len(gated))
    assert all(r["latency_ms"]["infer"] == 0.0 for r in reused)
    # At least one frame a second (force_every_s = 1) is inferred, whatever the gate says.
    fps = 30
    run = 0
    for r in gated:
        run = run + 1 if r.get("reused") else 0
        assert run < fps + 2
    # The documented tolerance: actions agree on at least 97 % of frames.
    agree = sum(a["action"] == b["action"] for a, b in zip(plain, gated))
    assert agree >= 0.97 * len(plain), (agree, len(plain))
