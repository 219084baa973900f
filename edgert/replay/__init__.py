"""`edgert replay`: recorded video through the same loop as the service, with a report.

Fast by default (every frame, decoded ahead on its own thread, the budget measured but not
enforced, so two replays decide identically); `--realtime` is the live run fed from a file.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path

from edgert.config.types import Config
from edgert.errors import EdgertError, UsageError

EXTRA = "pip install 'edgert[replay]'"


@dataclass(frozen=True, slots=True)
class ReplayArgs:
    target: Path
    config: Path
    out: Path
    realtime: bool = False
    annotate: bool = False
    expect: Path | None = None
    truth: Path | None = None
    source: str | None = None   # with [[sources]]: the id whose view (rules, zones) applies


def _need_extras(truth: bool) -> None:
    """Plots, the progress bar and the evaluator are the `replay` extra: a board running only
    the service does not carry them."""
    missing = []
    for mod in ("matplotlib", "tqdm", *(("pycocotools",) if truth else ())):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise UsageError(f"edgert replay needs {', '.join(missing)}; install it with {EXTRA}")


def _one_source(cfg: Config, a: ReplayArgs) -> Config:
    """A recording is one camera's: with [[sources]], the config as that source sees it (its
    zones, lines, rules and fail-safe), its records without a source id."""
    ids = [s.id for s in cfg.sources]
    if not cfg.named_sources:
        if a.source is not None:
            raise UsageError(f"--source {a.source}: {cfg.file} has one [source], not "
                             "[[sources]]; leave --source out")
        return cfg
    if a.source is None or a.source not in ids:
        said = "is missing" if a.source is None else f"{a.source!r} is not among them"
        raise UsageError(f"{cfg.file} has several sources ({', '.join(ids)}) and --source "
                         f"{said}; say which camera the recording is from: --source {ids[0]}")
    return dataclasses.replace(cfg.for_source(a.source), named_sources=False)


def replay(a: ReplayArgs, stop: threading.Event, say=print) -> int:
    """Replays, writes decisions, plots and report.json, prints the table; 3 if --expect
    differs. A user's mistake raises UsageError with one sentence."""
    _need_extras(a.truth is not None)
    from edgert.config import load_config
    from edgert.replay import expect as golden, inputs, plots, report
    from edgert.replay.run import DECISIONS, read_decisions, replay_file
    from edgert.replay.truth import load as load_truth, evaluate

    cfg = _one_source(load_config(a.config), a)
    recs = inputs.recordings(a.target)
    many = a.target.is_dir()
    stems = [r.stem for r in recs]
    if len(set(stems)) != len(stems):
        raise UsageError(f"{a.target}: two videos share a name before their suffix; their "
                         "decisions would share a folder, so rename one")
    if many and a.truth is not None:
        raise UsageError("--truth labels one recording; replay the folder's videos one by one "
                         "with their own labels")
    expected = {}
    if a.expect is not None:   # read now: a malformed golden file fails before the replay
        for r in recs:
            path = a.expect / r.stem / DECISIONS if many else a.expect
            if many and not path.is_file():
                raise UsageError(f"--expect {a.expect}: no {r.stem}/{DECISIONS} there; give "
                                 "the --out folder of an earlier replay of this folder")
            expected[r.stem] = read_decisions(path)
            if not expected[r.stem]:
                raise UsageError(f"{path}: holds no decision record; give a decisions.jsonl "
                                 "that edgert replay wrote")
    if a.truth is not None and not a.truth.is_dir():   # a folder needs the model's labels
        load_truth(a.truth, (), (recs[0].width, recs[0].height))
    out = inputs.writable_dir(a.out)
    mode = "realtime" if a.realtime else "fast"
    done = []
    for rec in recs:
        try:
            r = replay_file(cfg, rec, out / rec.stem if many else out, stop,
                            realtime=a.realtime, annotate=a.annotate)
            plots.draw(r.decisions, cfg.runtime.budget_ms, r.folder, rec.path.name)
        except EdgertError as e:
            report.write(out, report.build(cfg, done, mode=mode, complete=False, error=str(e)))
            raise
        done.append(r)
    rep = report.build(cfg, done, mode=mode)
    if a.truth is not None:
        r = done[0]
        truth = load_truth(a.truth, r.labels, (r.recording.width, r.recording.height))
        rep["recordings"][0]["truth"] = evaluate(truth, r.decisions, r.labels, r.frames_read,
                                                 a.truth)
    diffs = {}
    for r, entry in zip(done, rep["recordings"]):
        if r.recording.stem in expected:
            d = golden.compare(expected[r.recording.stem], r.decisions)
            entry["expect"] = {"golden": str(a.expect), "frames_differing": len(d)}
            if d:
                diffs[r.recording.path.name] = (d, len({x.verdict.frame_id for x in r.decisions}
                                                       | {x.verdict.frame_id for x in
                                                          expected[r.recording.stem]}))
    report.write(out, rep)
    say(report.table(rep))
    for name, (d, compared) in diffs.items():
        say(golden.format_diff(d, compared, name))
    return 3 if diffs else 0
