"""As the service user, not root: an unreadable config is one sentence and exit 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from conftest import DEMO_CONFIG, REPO, edgert

NOBODY = 65534
# The test's Python (and its packages) may live where nobody may read (/root/.pyenv): import
# what `check` needs as root, then drop to nobody before the CLI runs, as systemd's User= does.
AS_NOBODY = f"""
import os, sys
import locale, gettext, encodings.idna  # noqa: argparse translates its help through these
import edgert.cli, edgert.check, edgert.config, edgert.runtime, edgert.service.watch
os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
sys.exit(edgert.cli.main(sys.argv[1:]))
"""
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder nobody may enter (pytest's tmp_path sits in a root-only folder)."""
    path = Path(tempfile.mkdtemp(prefix="edgert-unpriv-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def as_nobody(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", AS_NOBODY, *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd="/")


@needs_root
def test_an_unreadable_config_is_one_sentence_and_exit_2(open_dir: Path) -> None:
    cfg = open_dir / "device.toml"
    cfg.write_text(DEMO_CONFIG.read_text())
    cfg.chmod(0)
    proc = as_nobody("check", str(cfg))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"edgert: {cfg}: cannot be read (Permission denied); let the "
                                   "service user read it (chmod or chgrp it).")


@needs_root
def test_a_config_in_a_folder_the_user_cannot_enter_says_so(open_dir: Path) -> None:
    locked = open_dir / "locked"
    locked.mkdir()
    cfg = locked / "device.toml"
    cfg.write_text(DEMO_CONFIG.read_text())
    locked.chmod(0o700)
    proc = as_nobody("run", str(cfg))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cannot be reached (Permission denied)" in proc.stderr


def test_a_folder_given_as_the_config_says_it_is_a_folder(tmp_path: Path) -> None:
    proc = edgert("check", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"edgert: {tmp_path}: is a directory, not a config file; "
                                   "give the path of the .toml file.")


def test_a_config_without_outputs_warns_at_start(tmp_path: Path) -> None:
    text = DEMO_CONFIG.read_text().replace('[[outputs]]\ntype = "stdout"\n', "")
    cfg = tmp_path / "device.toml"
    cfg.write_text(text.replace('"file:demo/', f'"file:{DEMO_CONFIG.parent}/demo/')
                   .replace('"../models/', f'"{REPO}/models/'))
    proc = edgert("run", str(cfg), "--frames", "3")
    assert proc.returncode == 0, proc.stderr
    assert "has no [[outputs]]: every decision is made and thrown away" in proc.stderr
