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
