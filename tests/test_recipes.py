"""Every config in docs/recipes.md passes `edgert check` and decides a few frames."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import MATERIAL, REPO, edgert, write_config

RECIPES = REPO / "docs" / "recipes.md"
WHERE = {   # the files the recipes name, where the repo and the test material keep them
    "conveyor.mp4": REPO / "device_configs/demo/conveyor.mp4",
    "conveyor_det.onnx": REPO / "models/demo/conveyor_det.onnx",
    "labels.txt": REPO / "models/demo/labels.txt",
    "intel_one-by-one-person-detection.mp4": MATERIAL / "videos/intel_one-by-one-person-detection.mp4",
    "yolox_nano_coco_416.onnx": MATERIAL / "models/yolox_nano_coco_416.onnx",
    "coco80.names": MATERIAL / "models/coco80.names",
}


def recipes() -> dict[str, str]:
    blocks = re.findall(r"^## (.+?)\n.*?```toml\n(.*?)```", RECIPES.read_text(), re.S | re.M)
    return dict(blocks)


def located(text: str) -> str:
    def swap(m: re.Match) -> str:
        prefix, path = m.group(1) or "", m.group(2)
        return f'"{prefix}{WHERE.get(Path(path).name, path)}"'
    return re.sub(r'"(file:)?([^"]+\.(?:mp4|onnx|txt|names))"', swap, text)


def test_the_recipes_are_there() -> None:
    assert set(recipes()) == {"Reject pusher", "Robot cell interlock", "People counter",
                              "Loitering alarm", "Parts counter per direction"}


@pytest.mark.parametrize("title", sorted(recipes()))
def test_recipe_checks_and_runs(tmp_path: Path, material: Path, title: str) -> None:
    cfg = write_config(tmp_path / "recipe.toml", located(recipes()[title]))
    proc = edgert("check", str(cfg), timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = edgert("run", str(cfg), "--frames", "5", timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.strip()]
    assert sum(r["schema"] == "edgert.decision/1" for r in out) == 5
