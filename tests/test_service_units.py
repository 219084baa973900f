"""The shipped systemd units: verified and scored by systemd-analyze, and kept alike.

systemd is not PID 1 in CI containers, so the real unit cannot be started here; the notify
protocol it relies on is tested end to end in test_service_notify.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

UNITS = REPO / "systemd"
MAX_EXPOSURE = 2.5
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed "
                                   "(apt-get install systemd)")


def _copy(tmp: Path, name: str, as_name: str) -> Path:
    """The unit with ExecStart's edgert replaced by an executable that exists here (verify
    checks that every command exists)."""
    text = (UNITS / name).read_text().replace("/usr/local/bin/edgert", "/bin/true")
    out = tmp / as_name
    out.write_text(text)
    return out


@needs_analyze
@pytest.mark.parametrize("name,as_name", [("edgert@.service", "edgert@line3-cam1.service"),
                                          ("edgert.service", "edgert.service")])
def test_unit_verifies_and_scores_at_most_2_5(tmp_path: Path, name: str, as_name: str) -> None:
    unit = _copy(tmp_path, name, as_name)
    verify = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr
    sec = subprocess.run([ANALYZE, "security", "--offline=true", str(unit)],
                         capture_output=True, text=True, cwd=tmp_path)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", sec.stdout)
    assert m, sec.stdout + sec.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, sec.stdout


def _settings(name: str) -> list[str]:
    return [ln for ln in (UNITS / name).read_text().splitlines()
            if ln and not ln.startswith("#")]


def test_the_two_units_differ_only_in_the_instance() -> None:
    template, plain = _settings("edgert@.service"), _settings("edgert.service")
    assert [ln.replace("%i", "edgert").replace(" (edgert)", "") for ln in template] == plain


def test_the_unit_keeps_what_the_board_needs() -> None:
    s = "\n".join(_settings("edgert@.service"))
    for must in ("Type=notify", "WatchdogSec=", "RestartPreventExitStatus=2", "KillMode=mixed",
                 "LimitRTPRIO=10", "SupplementaryGroups=video dialout", "CacheDirectory=edgert",
                 "StateDirectory=edgert", "ExecReload=/bin/kill -HUP $MAINPID",
                 "Restart=on-failure"):
        assert must in s
    # Each of these would break real-time priority, numba/onnxruntime JIT, or camera access.
    for never in ("RestrictRealtime=yes", "MemoryDenyWriteExecute=yes", "PrivateDevices=yes"):
        assert never not in s
