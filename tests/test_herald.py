"""The claim-and-publish protocol in-process, on a clock the test moves: one record per frame,
`ok` only in time, the policy's record at each deadline of every frame still owed one,
records numbered per source as they go out, `hold_last` aged in media time."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edgert.clock import ManualClock
from edgert.config.types import Config, FailSafeConfig, ModelConfig, RuntimeConfig, SourceConfig
from edgert.publish import Post, Publisher
from edgert.publish.herald import SEND_MARGIN_S, WORK, Armed, Herald, Offer, new_board

BUDGET_S = 0.050


class Collect:
    """An output that keeps what it is given (ours: the Output protocol, not a library)."""

    name = "collect"

    def __init__(self) -> None:
        self.posts: list[Post] = []

    def send(self, post: Post) -> None:
        self.posts.append(post)

    def close(self) -> None: ...

    def records(self) -> list[dict]:
        """The posts but rule events (they have their own seq)."""
        return [json.loads(p.line) for p in self.posts if p.kind != "event"]


def cfg(policy: str = "fail_safe", hold_ms: float = 500.0) -> Config:
    return Config(file=Path("device.toml"), device_id="herald-test",
                  source=SourceConfig(url="pattern:", kind="pattern", target=""),
                  model=ModelConfig(path=Path("m.onnx")),
                  runtime=RuntimeConfig(budget_ms=BUDGET_S * 1e3, on_overrun=policy,
                                        hold_last_max_age_ms=hold_ms),
                  fail_safe=FailSafeConfig(action="stop"))


def make(policy: str = "fail_safe", hold_ms: float = 500.0):
    clock, out = ManualClock(), Collect()
    herald = Herald(cfg(policy, hold_ms), "run1", Publisher([out]), clock, new_board())
    return clock, out, herald


def arm(herald: Herald, clock: ManualClock, uid: int, media_s: float | None = None,
        source: str = "main") -> Armed:
    a = Armed(uid, uid - 1, clock.now(), (uid - 1) / 30 if media_s is None else media_s,
              clock.now() + BUDGET_S, BUDGET_S * 1e3, clock.wall_at(clock.now()), 1.0,
              source_id=None if source == "main" else source, source=source)
    herald.arm(a)
    return a


def offer(uid: int, action: str = "reject") -> Offer:
    line = b'{"seq":0,"status":"ok","action":"%s"}' % action.encode()   # as the codec writes
    return Offer(uid, line, action, "r")


def test_an_ok_offered_in_time_goes_out_once_and_the_deadline_then_does_nothing() -> None:
    clock, out, herald = make()
    arm(herald, clock, 1)
    clock.advance(0.010)
    assert herald.offer(offer(1)) == "ok"
    assert out.posts[0].status == "ok" and out.posts[0].not_after == pytest.approx(
        clock.now() - 0.010 + BUDGET_S - SEND_MARGIN_S)   # written with the margin left, or not
    clock.advance(1.0)
    assert herald.fire() == "" and herald.offer(offer(1)) == ""
    assert [p.seq for p in out.posts] == [1] and herald.late_ok == 0


def test_at_the_deadline_the_policy_record_goes_out_and_a_late_offer_is_ignored() -> None:
    clock, out, herald = make()
    a = arm(herald, clock, 1)
    board = herald.board   # the loop is in inference, preprocess done
    board[0], board[1], board[2], board[3] = 1, WORK.index("infer"), clock.now() + 0.002, 2.0
    clock.advance(BUDGET_S - 1e-4)
    assert herald.fire() == ""                # not yet
    clock.advance(0.0003)
    assert herald.fire() == "fail_safe"
    rec = out.records()[0]
    assert rec["status"] == "fail_safe" and rec["action"] == "stop" and rec["seq"] == 1
    assert rec["cause"] == "deadline" and rec["stage"] == "infer"
    assert rec["late_ms"] == pytest.approx(0.2, abs=1e-3)
    assert rec["latency_ms"]["preprocess"] == 2.0 and rec["latency_ms"]["infer"] > 40
    assert rec["captured_at"] == pytest.approx(a.captured_at)
    clock.advance(0.001)
    assert herald.offer(offer(1)) == ""       # the loop finished late: nothing more goes out
    assert len(out.posts) == 1 and herald.fired == 1


def test_an_offer_too_close_to_the_deadline_becomes_the_policy_record() -> None:
    clock, out, herald = make()
    arm(herald, clock, 1)
    clock.advance(BUDGET_S - SEND_MARGIN_S / 2)   # inside the margin: the send might end late
    assert herald.offer(offer(1)) == "fail_safe"
    rec = out.records()[0]
    assert rec["cause"] == "predicted" and rec["stage"] == "publish"
    assert herald.late_ok == 0


def test_every_armed_frame_gets_exactly_one_record_in_seq_order() -> None:
    clock, out, herald = make()
    rng = np.random.default_rng(7)
    for seq in range(1, 301):
        arm(herald, clock, seq)
        what = rng.integers(0, 4)
        if what == 0:
            clock.advance(0.001)
            herald.offer(offer(seq))
        elif what == 1:
            herald.overrun(seq, "stale", "preprocess", {})
        elif what == 2:
            clock.advance(BUDGET_S)
            herald.fire()
            herald.offer(offer(seq))          # after the guard's record: ignored
        # what == 3: the loop moved on without a word; the deadline speaks for the frame
        clock.advance(0.001)
        herald.fire()
    clock.advance(BUDGET_S)
    herald.fire()   # the last frames, if the loop never spoke for them
    seqs = [p.seq for p in out.posts]
    assert seqs == list(range(1, 301))   # numbered as they went out: no gap, no repeat
    assert sorted(p.frame_id for p in out.posts) == list(range(300))   # one record a frame
    assert [r["seq"] for r in out.records()] == seqs   # the ok lines carry their number
    assert all(r["status"] in ("ok", "fail_safe") for r in out.records())
    assert {o.seq for o in herald.take_outcomes()} == set(seqs) and herald.owed == 0


@pytest.mark.parametrize("machine_slowness_s", [0.0, 0.2, 5.0])
def test_hold_last_ages_in_media_time_however_slow_the_machine(machine_slowness_s: float) -> None:
    """The same frames give the same records whether the machine took microseconds or seconds
    between them: the held decision's age is measured on the video's own time line."""
    clock, out, herald = make("hold_last", hold_ms=500.0)
    arm(herald, clock, 1, media_s=10.0)
    herald.offer(offer(1, "reject"))
    statuses = []
    for seq, media in ((2, 10.3), (3, 10.5), (4, 10.51), (5, 11.0)):
        clock.advance(machine_slowness_s)
        arm(herald, clock, seq, media_s=media)
        statuses.append(herald.overrun(seq, "predicted", "infer", {}))
    recs = out.records()[1:]
    assert statuses == ["hold_last", "hold_last", "fail_safe", "fail_safe"]
    assert [r.get("held_age_ms") for r in recs] == [pytest.approx(300.0), pytest.approx(500.0),
                                                    None, None]
    assert recs[0]["action"] == "reject" and recs[0]["held_seq"] == 1
    assert recs[2]["action"] == "stop" and recs[2]["hold_expired"] is True


class SteppingClock(ManualClock):
    """Every reading of the clock finds `step` seconds gone: a machine as slow as we like."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step

    def now(self) -> float:
        self.t += self.step
        return self.t

    def cpu(self) -> float:
        return self.t


def test_the_loop_decides_the_same_on_a_fast_and_a_slow_machine() -> None:
    """The demo clip through the whole loop (real model, real video) on two clocks: one where
    stages take a microsecond, one where they take 40 ms. Decisions are measured, not enforced,
    as in a replay, and what was decided must not depend on the machine."""
    import dataclasses
    import threading

    from conftest import DEMO_CONFIG
    from edgert.config import load_config
    from edgert.runtime import Runtime
    from edgert.source import open_source

    contents = []
    for step in (1e-6, 0.040):
        clock, out = SteppingClock(step), Collect()
        base = load_config(DEMO_CONFIG)
        c = dataclasses.replace(base, source=dataclasses.replace(base.source, mode="every"),
                                runtime=dataclasses.replace(base.runtime, metrics_interval_s=0))
        rt = Runtime.local(c, [out], source=open_source(c.source, clock), clock=clock)
        rt.run(threading.Event(), max_records=90)
        recs = out.records()
        assert [r["seq"] for r in recs] == list(range(1, 91))
        lat = [r["latency_ms"]["total"] for r in recs]
        assert min(lat) > (30.0 if step > 0.01 else 0.0)   # the slow machine really was slow
        contents.append([(r["frame_id"], r["status"], r["action"], r.get("rule"),
                          [(d["label"], d["score"], d["box"]) for d in r["detections"]])
                         for r in recs])
    assert contents[0] == contents[1]
    assert {c[2] for c in contents[0]} == {"none", "reject"}   # the rules did fire


def test_frames_of_several_sources_are_owed_records_at_once_each_at_its_own_deadline() -> None:
    """Frames armed on arrival while the loop works on another: each gets the policy's record
    at its own deadline, numbered in its own source's sequence, with its own fail-safe."""
    clock, out, herald = make()
    herald.configure(dataclasses.replace(
        herald.cfg, named_sources=True,
        sources=(SourceConfig(url="pattern:", kind="pattern", target="", id="a"),
                 SourceConfig(url="pattern:", kind="pattern", target="", id="b",
                              fail_safe="halt"))))
    arm(herald, clock, 1, source="a")
    clock.advance(0.002)
    arm(herald, clock, 2, source="b")
    clock.advance(0.002)
    arm(herald, clock, 3, source="a")
    assert herald.owed == 3 and herald.due() == pytest.approx(clock.now() - 0.004 + BUDGET_S)
    assert herald.offer(offer(1)) == "ok"           # the loop decided a's first frame
    clock.advance(BUDGET_S - 0.002 + 1e-4)          # past b's deadline, not a's second
    assert herald.fire() == "fail_safe" and herald.owed == 1
    clock.advance(0.002)
    herald.fire()
    assert [(p.source_id, p.seq, p.frame_id, p.action) for p in out.posts] == [
        ("a", 1, 0, "reject"), ("b", 1, 1, "halt"), ("a", 2, 2, "stop")]
    recs = out.records()
    assert [(r["source_id"], r["seq"]) for r in recs[1:]] == [("b", 1), ("a", 2)]
    assert all(r["late_ms"] < 1.0 for r in recs[1:])


def test_a_frame_replaced_before_the_loop_took_it_is_owed_nothing() -> None:
    clock, out, herald = make()
    arm(herald, clock, 1)
    clock.advance(0.010)
    herald.drop(1)                      # latest mode: a newer frame took its place
    arm(herald, clock, 2)
    herald.offer(offer(2))
    clock.advance(1.0)
    herald.fire()
    herald.drop(2)                      # too late to matter: it was spoken for
    assert [(p.seq, p.frame_id, p.status) for p in out.posts] == [(1, 1, "ok")]


def test_hold_last_holds_each_sources_own_decision() -> None:
    clock, out, herald = make("hold_last")
    arm(herald, clock, 1, media_s=1.0, source="a")
    herald.offer(offer(1, "reject"))
    arm(herald, clock, 2, media_s=1.0, source="b")
    herald.offer(offer(2, "accept"))
    arm(herald, clock, 3, media_s=1.1, source="a")
    herald.overrun(3, "predicted", "infer", {})
    arm(herald, clock, 4, media_s=1.1, source="c")   # nothing decided yet for c
    herald.overrun(4, "predicted", "infer", {})
    recs = out.records()
    assert [(r["status"], r["action"]) for r in recs[2:]] == [("hold_last", "reject"),
                                                             ("fail_safe", "stop")]
