"""Motion gating: [motion] is optional, and its errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import edgert, write_config
from onnx_models import one_box_pred, yolo_constant
from test_config import GOOD

from edgert.config import load_config
from edgert.config.types import MotionConfig
from edgert.errors import ConfigError


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """What GOOD (test_config's config) names beside it: a model and its labels."""
    yolo_constant(tmp_path / "model.onnx", one_box_pred())
    (tmp_path / "labels.txt").write_text("part\ndefect\n")
    return tmp_path


# --- (f): configuration ------------------------------------------------------------------------

def test_motion_defaults_keep_every_config_valid(workdir: Path) -> None:
    cfg = load_config(write_config(workdir / "device.toml", GOOD))
    assert cfg.motion == MotionConfig() and not cfg.motion.enabled
    text = GOOD + ('\n[motion]\nenabled = true\ngrid = [18, 32]\npixel_threshold = 8\n'
                   'area_threshold = 0.02\nforce_every_s = 2.5\nzones_only = true\n')
    cfg = load_config(write_config(workdir / "device.toml", text))
    assert cfg.motion == MotionConfig(True, (18, 32), 8.0, 0.02, 2.5, True)


MOTION_BAD = [
    ("unknown key", "threshold = 5", "motion.threshold", "spelling"),
    ("enabled not bool", 'enabled = "yes"', "motion.enabled", "true or false"),
    ("grid one number", "grid = [36]", "motion.grid", "list of 2 whole numbers"),
    ("grid too coarse", "grid = [1, 64]", "motion.grid", "at least 2"),
    ("pixel threshold zero", "pixel_threshold = 0", "motion.pixel_threshold", "above 0"),
    ("pixel threshold high", "pixel_threshold = 300", "motion.pixel_threshold", "at most 255"),
    ("area threshold share", "area_threshold = 5", "motion.area_threshold", "at most 1"),
    ("force zero", "force_every_s = 0", "motion.force_every_s", "above 0"),
    ("zones_only, rule without zone", 'zones_only = true\n[[rules]]\nname = "any"\n'
     'action = "stop"', "motion.zones_only", "rules[1]"),
]


@pytest.mark.parametrize("name,text,key,fix", MOTION_BAD, ids=[b[0] for b in MOTION_BAD])
def test_motion_config_errors_name_the_key(workdir: Path, name, text, key, fix) -> None:
    path = write_config(workdir / "device.toml", GOOD + f"\n[motion]\n{text}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and key in msg and fix in msg, msg
    assert "\n" not in msg


def test_check_refuses_a_bad_motion_section_with_exit_2(workdir: Path) -> None:
    path = write_config(workdir / "device.toml", GOOD + "\n[motion]\narea_threshold = -0.1\n")
    proc = edgert("check", str(path))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "motion.area_threshold" in lines[0] and str(path) in lines[0]
