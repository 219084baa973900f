"""Every board profile in device_configs/boards passes `edgert check` here, falling back to CPU
as its policy allows and saying so."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from conftest import REPO, edgert

BOARDS = sorted((REPO / "device_configs" / "boards").glob("*.toml"))


def test_there_is_a_profile_per_board() -> None:
    assert {p.stem for p in BOARDS} >= {"jetson-orin", "raspberry-pi-5", "x86-edge-pc",
                                         "qualcomm-qnn"}


@pytest.mark.parametrize("profile", BOARDS, ids=lambda p: p.stem)
def test_profile_passes_check_and_names_its_fallback(profile: Path, tmp_path: Path) -> None:
    # STATE_DIRECTORY as systemd would set it: the MQTT queue's default folder.
    proc = edgert("check", str(profile), env={"STATE_DIRECTORY": str(tmp_path)}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    bound = next(ln for ln in proc.stdout.splitlines() if ln.startswith("providers"))
    available = set(ort.get_available_providers())
    if "CPUExecutionProvider" in bound and not {"TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                 "OpenVINOExecutionProvider", "QNNExecutionProvider",
                                                 "XnnpackExecutionProvider"} & available:
        assert "not bound" in bound and "degraded, policy fallback" in bound, bound
    assert not list(tmp_path.iterdir()), "check must not create the MQTT queue"
