"""A reload's outputs: opened beside the running ones, a replaced one's records held for its
successor (or for itself, reopened, when the new config fails), nothing lost either way."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from test_outputs import post

from edgert.config.types import Config, OutputConfig, SerialConfig
from edgert.config import load_config
from edgert.errors import ConfigError
from edgert.publish.base import Publisher
from edgert.publish.factory import make_output, make_outputs
from edgert.publish.swap import OutputSwap

BASE = """
device_id = "swap"
[source]
url = "pattern:"
[model]
path = "m.onnx"
[fail_safe]
action = "stop"
"""


def config(tmp_path: Path, *outputs: OutputConfig) -> Config:
    (tmp_path / "m.onnx").touch()
    (tmp_path / "d.toml").write_text(BASE)
    return dataclasses.replace(load_config(tmp_path / "d.toml"), outputs=tuple(outputs))


def seqs(path: Path) -> list[int]:
    return [json.loads(ln)["seq"] for ln in path.read_text().splitlines() if ln.endswith("}")]


def jsonl(path: Path, flush_every: int = 1) -> OutputConfig:
    return OutputConfig("jsonl", path=path, flush_every=flush_every)


def test_a_replaced_output_hands_what_it_missed_to_its_successor(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    old = config(tmp_path, jsonl(a), jsonl(b))
    # a stays as it is; b's file is taken over by a changed b (closed first); c is new.
    new = config(tmp_path, jsonl(a), jsonl(b, flush_every=2), jsonl(tmp_path / "c.jsonl"))
    outs = make_outputs(old)
    pub = Publisher(outs)
    for i in range(1, 4):
        pub.publish(post(i))
    swap = OutputSwap(list(zip(old.outputs, outs)), old, new, pub, make_output)
    pub.publish(post(4))           # while the swap is prepared: b's successor must get it
    assert swap.done.wait(30) and swap.error is None
    pub.publish(post(5))           # still the old set until the commit
    bound = swap.commit()
    assert [oc for oc, _ in bound] == list(new.outputs)
    assert bound[0][1] is outs[0]   # unchanged: the same output, never reopened
    pub.publish(post(6))
    pub.close()
    assert seqs(a) == [1, 2, 3, 4, 5, 6]
    assert seqs(b) == [1, 2, 3, 4, 5, 6]
    assert seqs(tmp_path / "c.jsonl") == [6]


def test_a_new_config_whose_output_cannot_open_leaves_the_old_set_whole(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    old = config(tmp_path, jsonl(a))
    missing = OutputConfig("serial", serial=SerialConfig("/dev/ttyEDGERT-none", on_missing="fail"))
    new = config(tmp_path, jsonl(a, flush_every=5), missing)
    outs = make_outputs(old)
    pub = Publisher(outs)
    pub.publish(post(1))
    swap = OutputSwap(list(zip(old.outputs, outs)), old, new, pub, make_output)
    pub.publish(post(2))
    assert swap.done.wait(30)
    assert "ttyEDGERT-none" in (swap.error or "")
    bound = swap.restore()
    assert [oc for oc, _ in bound] == list(old.outputs)   # a, reopened as it was
    pub.publish(post(3))
    pub.close()
    assert seqs(a) == [1, 2, 3]


def test_the_serial_error_is_the_config_error_the_start_would_give(tmp_path: Path) -> None:
    missing = OutputConfig("serial", serial=SerialConfig("/dev/ttyEDGERT-none", on_missing="fail"))
    cfg = config(tmp_path, missing)
    try:
        make_output(cfg, 0)
    except ConfigError as e:
        assert "outputs[0]" in str(e)
    else:
        raise AssertionError("a missing port with on_missing = fail opened")


def routed(path: Path, *ids: str, flush_every: int = 1) -> OutputConfig:
    return dataclasses.replace(jsonl(path, flush_every), sources=ids)


def sources_in(path: Path) -> list[tuple[str | None, int]]:
    return [(r["source_id"], r["seq"]) for r in map(json.loads, path.read_text().splitlines())]


def test_routes_hold_through_a_swap_and_its_held_posts(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    old = config(tmp_path, routed(a, "a"), jsonl(b))
    # a's output is replaced (its posts held meanwhile) and stays routed to a; c is new, for b.
    new = config(tmp_path, routed(a, "a", flush_every=2), jsonl(b), routed(c, "b"))
    outs = make_outputs(old)
    pub = Publisher(outs, [oc.sources for oc in old.outputs])
    pub.publish(post(1, size=1, source="a"))
    pub.publish(post(2, size=1, source="b"))
    swap = OutputSwap(list(zip(old.outputs, outs)), old, new, pub, make_output)
    pub.publish(post(3, size=1, source="b"))   # held for a's successor, which must drop it
    pub.publish(post(4, size=1, source="a"))
    assert swap.done.wait(30) and swap.error is None
    swap.commit()
    pub.publish(post(5, size=1, source="b"))
    pub.publish(post(6, size=1, source="a"))
    pub.close()
    assert sources_in(a) == [("a", 1), ("a", 4), ("a", 6)]
    assert sources_in(b) == [("a", 1), ("b", 2), ("b", 3), ("a", 4), ("b", 5), ("a", 6)]
    assert sources_in(c) == [("b", 5)]


def test_a_rejected_swap_gives_the_reopened_output_its_route_back(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    old = config(tmp_path, routed(a, "a"))
    missing = OutputConfig("serial", serial=SerialConfig("/dev/ttyEDGERT-none", on_missing="fail"))
    new = config(tmp_path, routed(a, "a", flush_every=5), missing)
    outs = make_outputs(old)
    pub = Publisher(outs, [oc.sources for oc in old.outputs])
    swap = OutputSwap(list(zip(old.outputs, outs)), old, new, pub, make_output)
    pub.publish(post(1, size=1, source="b"))   # held, then dropped by the reopened a's route
    pub.publish(post(2, size=1, source="a"))
    assert pub.stats()["held"] == {"failures": 0, "held": 2, "dropped": 0}   # metrics meanwhile
    assert swap.done.wait(30) and swap.error is not None
    swap.restore()
    pub.publish(post(3, size=1, source="b"))
    pub.publish(post(4, size=1, source="a"))
    pub.close()
    assert sources_in(a) == [("a", 2), ("a", 4)]
