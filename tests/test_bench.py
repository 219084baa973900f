"""`edgert bench` as a user runs it: the report's fields and how they relate, never its speed."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import DEMO_CONFIG, edgert

HAS_ULTRALYTICS = importlib.util.find_spec("ultralytics") is not None


def test_bench_json_counts_capture_in_the_frame_and_runs_the_naive_loop_beside() -> None:
    proc = edgert("bench", str(DEMO_CONFIG), "--frames", "20", "--json", "--compare", "naive",
                  "--rounds", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["frames"] == 20
    # A frame is its capture plus its step: fps is what a user of `edgert run` sees.
    assert r["frame_ms"]["mean"] == pytest.approx(r["capture_ms"]["mean"] + r["step_ms"]["mean"],
                                                  rel=1e-6)
    assert r["capture_ms"]["p50"] > 0
    assert r["throughput_fps"] == pytest.approx(1e3 / r["frame_ms"]["mean"])
    assert r["floor_frame_ms"]["p50"] > r["bare_session_run_ms"]["p50"]
    for key in ("step_vs_bare_run", "frame_vs_floor", "cpu_vs_floor"):
        assert r[key] > 0
    nv = r["naive"]
    assert nv["frames"] == 20 and nv["capture_ms"]["p50"] > 0
    assert nv["fps_ratio"] == pytest.approx(r["throughput_fps"] / nv["throughput_fps"])
    cmp = r["compare"]
    assert set(cmp["contenders"]) == {"edgert", "naive"}
    for c in cmp["contenders"].values():
        assert c["fps"] > 0 and c["cpu_ms_per_frame"] > 0 and c["peak_rss_mb"] > 0
    q = cmp["ratios"]["naive"]
    assert q["peak_rss"] == pytest.approx(cmp["contenders"]["edgert"]["peak_rss_mb"]
                                          / cmp["contenders"]["naive"]["peak_rss_mb"])


def test_bench_text_report_puts_ratios_before_absolutes() -> None:
    proc = edgert("bench", str(DEMO_CONFIG), "--frames", "10", timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.index("ratios") < text.index("absolutes")
    assert "capture and decode included" in text and "naive loop" in text


@pytest.mark.skipif(HAS_ULTRALYTICS, reason="ultralytics is installed: no install hint to show")
def test_compare_ultralytics_without_the_package_says_how_to_install_it() -> None:
    proc = edgert("bench", str(DEMO_CONFIG), "--frames", "5", "--compare", "ultralytics")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "pip install ultralytics" in proc.stderr


def test_compare_ultralytics_without_the_package_exits_2(tmp_path, monkeypatch) -> None:
    """The same check with the package hidden, so it runs where ultralytics is installed too."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\nclass _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ultralytics':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Hide())\n")
    proc = edgert("bench", str(DEMO_CONFIG), "--frames", "5", "--compare", "ultralytics",
                  env={"PYTHONPATH": str(hide)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "pip install ultralytics" in proc.stderr


@pytest.mark.skipif(not HAS_ULTRALYTICS, reason="ultralytics is not installed (optional)")
def test_compare_ultralytics_reports_its_own_process() -> None:
    proc = edgert("bench", str(DEMO_CONFIG), "--frames", "10", "--json", "--compare",
                  "ultralytics", "--rounds", "1", timeout=600)
    assert proc.returncode == 0, proc.stderr
    cmp = json.loads(proc.stdout)["compare"]
    u = cmp["contenders"]["ultralytics"]
    assert u["fps"] > 0 and u["peak_rss_mb"] > 0 and "ultralytics" in cmp["ratios"]
