"""The hard budget, observed from outside a real `edgert run`: no late `ok`, a record for every
frame, the overrun policies, runs stopped rather than waited for, and the degradation ladder.

Models are graphs whose cost the test controls (chains of MatMuls; one that spikes on bright
frames). Budgets are set from the model's median inference time measured here, in this run."""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, write_config
from onnx_models import matmul_chain, spiky_chain

from edgert.config.types import LadderConfig, Rung, RuntimeConfig
from edgert.costs import StageCosts
from edgert.infer import InferenceRunner, load_model
from edgert.ladder import Ladder

sys.path.insert(0, str(REPO / "tools"))
from observe import Observed, observe  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(REPO))
LIGHT = (Rung("light", Path("light.onnx")),)

CONFIG = """
device_id = "deadline-test"

[source]
url = "{url}"
mode = "{mode}"
{source_extra}

[model]
path = "{model}"
conf = 0.25

[runtime]
budget_ms = {budget:.3f}
on_overrun = "{policy}"
{runtime_extra}

[fail_safe]
action = "stop"

[[rules]]
name = "anything"
action = "pass"

[[outputs]]
type = "stdout"
"""


def config(tmp: Path, budget_ms: float, *, url: str = "pattern:", mode: str = "latest",
           model: str = "model.onnx", policy: str = "fail_safe", source_extra: str = "fps = 60",
           runtime_extra: str = "") -> Path:
    return write_config(tmp / "device.toml", CONFIG.format(
        url=url, mode=mode, model=model, budget=budget_ms, policy=policy,
        source_extra=source_extra, runtime_extra=runtime_extra))


def median_inference_ms(path: Path, image: np.ndarray | None = None, runs: int = 15,
                        gap_s: float = 1 / 60) -> float:
    """The model's median `session.run` here and now, with edgert's own session settings,
    paced as the runs under test are (frames at 60 fps): on this VM a run that follows an
    idle gap takes about twice as long as one run back to back (5.4 vs 10.2 ms measured),
    so a budget from back-to-back runs would be half what the paced run needs."""
    session, info = load_model(path, RuntimeConfig())
    runner = InferenceRunner(session, info.input_name)
    x = np.zeros((1, 3, 64, 64), np.float32) if image is None else image
    runner.run(x)
    took = []
    with loop_priority():
        for _ in range(runs):
            time.sleep(gap_s)
            took.append(runner.run(x).seconds)
    return statistics.median(took) * 1e3


@contextlib.contextmanager
def loop_priority():
    """This thread at the priority edgert's loop takes by default (SCHED_FIFO 3 where allowed),
    so a busy machine slows the calibration as much as it slows the run, and no more."""
    try:
        old = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(3))
    except (AttributeError, PermissionError, OSError):
        yield
        return
    try:
        yield
    finally:
        os.sched_setscheduler(0, *old)


def run(cfg: Path, **kw) -> Observed:
    obs = observe([sys.executable, "-m", "edgert", "run", str(cfg)], cwd=str(cfg.parent),
                  env=ENV, **kw)
    assert obs.returncode == 0, obs.stderr[-2000:]
    assert "Traceback" not in obs.stderr
    seqs = [r["seq"] for r in obs.records]
    assert seqs == list(range(1, len(seqs) + 1)), "a gap or a repeat in seq"
    return obs


def spiky_images(folder: Path, n: int = 10, bright: tuple[int, ...] = (4,)) -> Path:
    """An image folder whose frame `i` is bright (the spiky model's heavy branch) if i in bright."""
    folder.mkdir()
    for i in range(n):
        level = 230 if i in bright else 30
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((64, 64, 3), level, np.uint8))
    return folder


# -- learned costs and the ladder, as state machines ------------------------------------------

def test_stage_costs_learn_a_high_percentile_and_probe_after_skips() -> None:
    costs = StageCosts(window=32, quantile=0.9, refresh=4, min_samples=8, probe_after=4)
    assert costs.fits("infer", 0.0)              # nothing learned yet: never refuse
    for v in [0.010] * 28 + [0.050] * 4:         # 1 in 8 slow: p90 lands on a slow one
        costs.observe("infer", v)
    assert costs.expected("infer") == pytest.approx(0.050)
    assert not costs.fits("infer", 0.030)
    # Four frames refused in a row (one above), then a probe frame ignores the estimates so
    # that a stage that got cheaper can be relearned.
    assert [costs.fits("infer", 0.030) for _ in range(3)] == [False] * 3
    assert costs.probe() and not costs.probe()
    costs.fits("infer", 0.030)
    costs.passed()   # a frame that went through resets the count
    assert [costs.probe() for _ in range(2)] == [False, False]
    for _ in range(32):
        costs.observe("infer", 0.010)
    assert costs.expected("infer") == pytest.approx(0.010)


def test_stopped_runs_do_not_raise_the_estimate_until_they_are_most_runs() -> None:
    costs = StageCosts(window=16, quantile=0.9, refresh=1, min_samples=4)
    for i in range(16):   # one run in four is stopped at its deadline (a spike)
        costs.observe("infer", 0.030 if i % 4 == 0 else 0.005, stopped=i % 4 == 0)
    assert costs.expected("infer") == pytest.approx(0.005)
    for _ in range(9):    # now most runs are stopped: the stage no longer fits at all
        costs.observe("infer", 0.030, stopped=True)
    assert costs.expected("infer") == float("inf") and not costs.fits("infer", 1.0)
    costs.observe("infer", 0.006)   # a run finished (a probe): the board has time again
    assert costs.expected("infer") < 0.01 and costs.fits("infer", 0.02)


def test_ladder_steps_down_after_misses_and_up_only_with_headroom() -> None:
    cfg = LadderConfig(rungs=LIGHT, down_after=3, up_after=5, headroom=0.8)
    ladder = Ladder(cfg, budget_s=0.010, baseline_s=[0.006, 0.002])
    assert [ladder.record(True) for _ in range(2)] == [None, None]
    switch = ladder.record(True)
    assert switch is not None and switch.down and ladder.rung == 1
    # Loaded: the light rung runs 2× its unloaded cost, so the main one would need 12 ms.
    assert all(ladder.record(False, 0.004, 0.005) is None for _ in range(50))
    assert ladder.rung == 1
    # The load goes: 2 ms → main expected at 6 ms + 1 ms overhead ≤ 8 ms, five times running.
    assert [ladder.record(False, 0.002, 0.003) is None for _ in range(5)] == [True] * 4 + [False]
    assert ladder.rung == 0 and ladder.switches == 2


def test_ladder_backs_off_after_a_climb_that_fails() -> None:
    cfg = LadderConfig(rungs=LIGHT, down_after=1, up_after=4, headroom=0.8)
    ladder = Ladder(cfg, budget_s=0.010, baseline_s=[0.006, 0.002])
    waits = []
    for _ in range(4):
        ladder.record(True)                      # down at once
        assert ladder.rung == 1
        n = 0
        while ladder.rung == 1:
            ladder.record(False, 0.002, 0.003)
            n += 1
        waits.append(n)
    # Each climb failed on its first frame: the wait before the next one doubles.
    assert waits == [4, 8, 16, 32]


# -- the promise, observed from outside -------------------------------------------------------

def started_runs(obs: Observed) -> list[float]:
    """How long each inference this `edgert run` started took, in ms, as its records say; a run
    stopped at its deadline is only known to take longer than any that finished: inf."""
    runs = []
    for r in obs.records:
        if r["status"] == "ok" or r["stage"] in ("postprocess", "decide", "publish"):
            runs.append(r["latency_ms"]["infer"])
        elif r["stage"] == "infer" and r["cause"] == "deadline":
            runs.append(math.inf)
    return runs


# How far the machine's speed may drift between the calibration and the run for the run to
# still say something about the budget's factor. One busy process on this 2-core machine
# doubles a 2-thread inference; a steady load (even two busy processes) moves it far less.
DRIFT = 1.3


def judgeable(obs: Observed, median: float, factor: float) -> tuple[bool, str]:
    """Whether the run saw the machine the budget was set for, in the direction that could
    turn the verdict on the share of `ok`: not slower at 2×, not faster at 0.5×."""
    runs = started_runs(obs)
    if not runs:
        return factor < 2.0, "no inference started"
    drift = statistics.median(runs) / median
    stopped = sum(v == math.inf for v in runs) / len(runs)
    seen = f"median/calibration {drift:.2f}, {stopped:.0%} of {len(runs)} runs stopped"
    if factor >= 2.0:
        # Slow phases of seconds (another process's burst) stop runs in clusters, and a median
        # over the whole run hides them: a quarter of the runs stopped is a machine that did
        # not give the budget its factor.
        return drift <= DRIFT and stopped <= 0.25, seen
    if factor <= 0.5:
        return drift >= 1 / DRIFT, seen
    return True, seen


@pytest.mark.parametrize("factor", [0.5, 0.9, 1.1, 2.0])
def test_no_ok_record_is_late_and_every_frame_gets_one(tmp_path: Path, factor: float) -> None:
    """Whatever the budget, every frame gets exactly one record and no `ok` one is late; and
    the share of `ok` follows the budget: under half at 0.5× the inference, over half at 2×
    (so the promise is not kept by giving up on every frame).

    The factor is of the inference as the machine runs it during the run, not as measured
    once before it: the shared machine's speed drifts in phases of seconds (one busy process
    doubles this model's time). Seen on an idle machine with a budget of 2× a median measured
    in-process: 251 of 301 records fail_safe, because the run's inference had become ~2× the
    calibration. So the share of `ok` is judged only on a run whose own inferences (from its
    records) match the calibration (`judgeable`); otherwise the run is repeated with a fresh
    calibration. The no-late-`ok` and one-record-per-frame promises hold whatever the machine
    does and are checked on every attempt."""
    model = matmul_chain(tmp_path / "model.onnx", size=512, depth=10)
    attempts = []
    for _attempt in range(4):
        median = median_inference_ms(model, runs=15)
        budget = max(1.0, factor * median)
        obs = run(config(tmp_path, budget, source_extra="fps = 60"), records=300, seconds=60)
        assert len(obs.records) >= 100
        assert obs.late("ok") == 0, obs.report()
        statuses = {r["status"] for r in obs.records}
        assert statuses <= {"ok", "fail_safe"}
        for r in obs.records:
            if r["status"] == "fail_safe":
                assert r["cause"] in ("stale", "deadline", "predicted") and r["detections"] == []
        fair, seen = judgeable(obs, median, factor)
        attempts.append(seen)
        if fair:
            break
    else:
        pytest.fail(f"the machine's speed drifted during every run ({attempts}); the share of "
                    "ok records could not be judged")
    share_ok = sum(r["status"] == "ok" for r in obs.records) / len(obs.records)
    if factor <= 0.5:
        assert share_ok < 0.5, (attempts, obs.report())
    if factor >= 2.0:
        # 2× leaves a typical frame one inference of slack: room for the mailbox wait (at most
        # a frame period at 60 fps) and the run's own overheads. Judged on the frames whose
        # inference was started: after a slow spell the learned costs may give frames up
        # before starting them (seen: 140 of 301 in a full-suite run), which is the cost
        # model's caution, not the budget's verdict on a run.
        started = [r for r in obs.records if r["latency_ms"]["infer"] > 0]
        share_started = sum(r["status"] == "ok" for r in started) / max(1, len(started))
        assert share_started > 0.5, (attempts, len(started), obs.report())


@pytest.mark.slow
@pytest.mark.parametrize("factor", [0.5, 0.9, 1.1, 2.0])
def test_no_ok_record_is_late_over_thousands_of_frames(tmp_path: Path, factor: float) -> None:
    model = matmul_chain(tmp_path / "model.onnx", size=512, depth=10)
    budget = max(1.0, factor * median_inference_ms(model, gap_s=0.01))
    obs = run(config(tmp_path, budget, source_extra="fps = 100"), records=3000, seconds=300)
    assert len(obs.records) >= 3000 and obs.late("ok") == 0, obs.report()


def test_a_spike_gets_its_fail_safe_at_the_deadline_from_the_guard(tmp_path: Path) -> None:
    """The model's cost jumps on chosen frames: the guard publishes while `session.run` is
    busy, and the run is stopped so the loop goes on promptly."""
    # A heavy branch long enough that "stopped" and "waited for" stay far apart on a busy
    # machine, where onnxruntime's worker thread (normal priority) may lag the loop's.
    model = spiky_chain(tmp_path / "model.onnx", size=512, light=1, heavy=160)
    light = median_inference_ms(model, gap_s=0)   # image frames on demand: back to back
    heavy = median_inference_ms(model, np.full((1, 3, 64, 64), 230.0, np.float32), runs=3,
                                gap_s=0)
    assert heavy > 4 * light
    budget = min(heavy / 2, max(8 * light, light + 10))
    images = spiky_images(tmp_path / "frames", n=20, bright=(9,))
    cfg = config(tmp_path, budget, url=f"images:{images}", mode="every",
                 source_extra="loop = true")
    obs = run(cfg, records=200, seconds=90)
    recs = obs.records
    spikes = [i for i, r in enumerate(recs) if r["frame_id"] % 20 == 9]
    assert len(spikes) >= 8
    assert obs.late("ok") == 0, obs.report()
    by_guard = [i for i in spikes if recs[i]["cause"] == "deadline" and recs[i]["stage"] == "infer"]
    assert by_guard, [recs[i] for i in spikes[:3]]
    for i in by_guard:
        r = recs[i]
        assert r["status"] == "fail_safe" and r["action"] == "stop" and "late_ms" in r
        # Stopped, not waited for: the next frame was taken long before the heavy run's end.
        deadline = r["captured_at"] + r["deadline_ms"] / 1e3
        if i + 1 < len(recs):
            assert recs[i + 1]["captured_at"] - deadline < heavy / 2 / 1e3, (r, recs[i + 1])
    others = [r for i, r in enumerate(recs) if i not in spikes]
    assert sum(r["status"] == "ok" for r in others) >= 0.9 * len(others)
    assert all(r["action"] == "pass" for r in others if r["status"] == "ok")


@pytest.mark.parametrize("policy, extra, status, action", [
    ("fail_safe", "", "fail_safe", "stop"),
    ("skip", "", "skipped", "none"),
    ("hold_last", "hold_last_max_age_ms = 10000", "hold_last", "pass"),
    ("hold_last", "hold_last_max_age_ms = 0", "fail_safe", "stop"),
])
def test_overrun_policies(tmp_path: Path, policy: str, extra: str, status: str,
                          action: str) -> None:
    model = spiky_chain(tmp_path / "model.onnx", size=512, light=1, heavy=40)
    light = median_inference_ms(model, gap_s=0)   # image frames on demand: back to back
    heavy = median_inference_ms(model, np.full((1, 3, 64, 64), 230.0, np.float32), runs=3,
                                gap_s=0)
    budget = min(max(8 * light, light + 10), heavy / 2)
    images = spiky_images(tmp_path / "frames", n=6, bright=(3,))
    cfg = config(tmp_path, budget, url=f"images:{images}", mode="every", policy=policy,
                 source_extra="loop = true", runtime_extra=extra)
    obs = run(cfg, records=36, seconds=60)
    spikes = [r for r in obs.records if r["frame_id"] % 6 == 3]
    calm = [r for r in obs.records if r["frame_id"] % 6 != 3]
    assert spikes and all(r["status"] == status and r["action"] == action for r in spikes), spikes[:2]
    # Calm frames fit with room to spare; a busy machine may still make one miss now and then.
    assert sum(r["status"] != "ok" for r in calm) <= len(calm) // 5, calm[:3]
    assert all(r["action"] == "pass" for r in calm if r["status"] == "ok")
    if status == "hold_last":
        for r in spikes:
            held = obs.records[r["held_seq"] - 1]
            assert held["status"] == "ok" and held["action"] == r["action"]
    if policy == "hold_last" and status == "fail_safe":
        assert all(r["hold_expired"] for r in spikes)


def test_budget_at_half_the_inference_keeps_records_coming(tmp_path: Path) -> None:
    """Frames read on demand, every run too slow: records come at least once per budget period,
    because an overrunning run is stopped (or not started) rather than waited for."""
    # Many small operators: a stopped run ends within one of them (under 1% of the run). A long
    # run, so that "stopped" and "waited for" are tens of ms apart even on a busy machine.
    model = matmul_chain(tmp_path / "model.onnx", size=256, depth=160)
    budget = median_inference_ms(model, gap_s=0) / 2   # frames at 1000 fps: back to back
    cfg = config(tmp_path, budget, mode="every", source_extra="fps = 1000")
    obs = run(cfg, records=60, seconds=60)
    assert len(obs.records) >= 60
    span = obs.received[59] - obs.received[0]
    assert all(r["status"] == "fail_safe" for r in obs.records)
    assert span / 59 <= budget / 1e3, (span / 59 * 1e3, budget)
    # Runs that were started (probes) were stopped at their deadline, not waited for.
    started = [r for r in obs.records[:59] if r["stage"] == "infer" and r["cause"] == "deadline"]
    assert started, "no run was started: the test shows nothing about stopping"
    for r in started:
        # The next frame is read when the loop is free: soon after the deadline, not after
        # the rest of the run (another budget's worth).
        nxt = obs.records[r["seq"]]
        assert nxt["captured_at"] - (r["captured_at"] + budget / 1e3) < budget / 1e3, (r, nxt)


def test_the_ladder_steps_down_under_load_and_back_up_when_it_goes(tmp_path: Path) -> None:
    """Busy processes make the main model miss: the ladder steps down to the light rung, stays
    there while the load lasts (hysteresis, no flapping), and climbs back once it goes.

    The load is driven by what the run does, not by a clock: busy processes are added until
    the ladder steps down (how many it takes depends on what else the machine runs: with two
    busy processes already there, four more make inference only ~2× slower, not the ~3× an
    idle machine sees, and the fixed four used to leave the main model inside its budget);
    they are stopped once the light rung has held for a while; then the climb back is waited
    for. Every wait has a generous timeout, and failing one is the test's verdict."""
    main = matmul_chain(tmp_path / "model.onnx", size=512, depth=12)
    matmul_chain(tmp_path / "light.onnx", size=512, depth=2)
    median = median_inference_ms(main)
    # Calm, a frame may wait up to one frame period in the mailbox and then take one
    # inference; climbing needs main's expected cost under 0.8 × budget. 3× leaves room for
    # the calm machine's jitter and is still crossed by a heavy enough load.
    budget = 3 * median
    # The loop at normal priority: at SCHED_FIFO (the default) busy processes cannot slow it
    # enough to step down, and the ladder is for load that priority does not cure.
    ladder = """
loop_priority = "normal"

[runtime.ladder]
down_after = 3
up_after = 15

[[runtime.ladder.rungs]]
name = "light"
path = "light.onnx"
"""
    cfg = config(tmp_path, budget, source_extra="fps = 20", runtime_extra=ladder)
    hogs: list[subprocess.Popen] = []
    marks: dict[str, float] = {}
    held, back = 60, 60   # records (3 s at 20 fps) on the light rung under load, on main after

    # Started from the observer's thread, which may run at real-time priority: the busy
    # processes drop back to normal scheduling first, like any other process on the machine.
    hog = ("import os\nif hasattr(os, 'sched_setscheduler'):\n"
           "    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))\nwhile True: pass\n")

    def add_load(n: int) -> None:
        hogs.extend(subprocess.Popen([sys.executable, "-c", hog]) for _ in range(n))

    def stop_load() -> None:
        for h in hogs:
            h.kill()
        for h in hogs:
            h.wait()

    rungs: list[str] = []

    def follow(r: dict, got: float) -> bool:   # on the observer's thread, as records arrive
        rungs.append(r.get("rung", "main"))
        n = len(rungs)
        if "load" not in marks:
            if n >= 40:                       # warmed up on main: the load starts
                marks["load"] = got
                add_load(4)
            return False
        if "down" not in marks:
            if rungs[-1] == "light":
                marks["down"], marks["down_at"] = got, n
            elif got - marks.get("more", marks["load"]) > 5 and len(hogs) < 16:
                marks["more"] = got           # not enough to make main miss here: more load
                add_load(2)
            return False
        if "end" not in marks:
            if n - marks["down_at"] >= held:
                stop_load()
                marks["end"], marks["end_at"] = time.time(), n
            return False
        tail = rungs[marks["end_at"]:]
        return len(tail) >= back and set(tail[-back:]) == {"main"}

    try:
        obs = run(cfg, seconds=120, on_record=follow)
    finally:
        stop_load()
    assert "down" in marks, f"did not step down under load ({len(hogs)} busy processes)"
    assert "end" in marks, obs.report()
    during = rungs[marks["down_at"]:marks["end_at"]]
    assert during.count("light") > 0.8 * len(during), "did not stay down under load"
    tail = rungs[marks["end_at"]:]
    assert len(tail) >= back and set(tail[-back:]) == {"main"}, \
        (f"did not climb back within {obs.received[-1] - marks['end']:.0f} s once the load "
         f"went (budget {budget:.1f} ms); the run's summary: {obs.stderr[-1500:]}")
    changes = sum(a != b for a, b in zip(rungs, rungs[1:]))
    assert changes <= 6, f"flapping: {changes} switches"
    assert "degraded: stepping down" in obs.stderr
