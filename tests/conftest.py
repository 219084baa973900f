"""Shared fixtures: where the repo, the demo and the shared material are, and how to run edgert."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MATERIAL = REPO.parent / "shared" / "material"
DEMO_MODEL = REPO / "models" / "demo" / "conveyor_det.onnx"
DEMO_CLIP = REPO / "device_configs" / "demo" / "conveyor.mp4"
DEMO_TRUTH = REPO / "device_configs" / "demo" / "conveyor.truth.jsonl"
DEMO_CONFIG = REPO / "device_configs" / "demo.toml"


@pytest.fixture
def material() -> Path:
    if not (MATERIAL / "README.md").is_file():
        pytest.skip(f"shared test material not found at {MATERIAL} (it sits beside the repo in CI)")
    return MATERIAL


def edgert(*args: str, timeout: float = 120, env: dict | None = None,
           cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user or systemd would."""
    full_env = dict(os.environ, **(env or {}))
    extra = (env or {}).get("PYTHONPATH", "")
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), extra) if p)
    return subprocess.run([sys.executable, "-m", "edgert", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd or REPO)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def mobilenet_lines(material: Path, top_k: int = 5, input_extra: str = "") -> str:
    """[model] lines after `path` for the shared ImageNet classifier, as its model card
    describes its input (RGB, shorter side to 256, centre 224, ImageNet mean and std)."""
    return f"""family = "classify"
labels = "{material / 'models/imagenet1000_simple_labels.txt'}"
top_k = {top_k}
conf = 0.0

[model.input]
resize = "center_crop"
color = "rgb"
scale = 0.00392156862745098
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
{input_extra}"""
