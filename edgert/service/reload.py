"""SIGHUP: a new config read and made ready off the frame path, then put in force at one frame
boundary — or refused whole, the old one running on.

In order, each step only once the one before succeeded, the loop deciding frames throughout:
the config is read and checked; a changed model (file, input, decoder thresholds, providers,
ladder) is loaded and warmed up on a thread of its own beside the running one; the sender
opens changed outputs beside the running ones (`edgert.publish.swap`). Then, between two
frames, the rules, the model, the outputs and the fail-safe switch together. Rule state, open
events and (while the model file and input stay) the tracker carry over. What cannot change
in a running process (the sources, a source's own fail_safe, the device id, priorities, the
metrics endpoint) is refused with a line that says to restart.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgert.config import load_config
from edgert.config.types import Config
from edgert.errors import EdgertError

if TYPE_CHECKING:
    from edgert.runtime import Runtime

log = logging.getLogger("edgert.service")

# What a running process cannot take: "restart the service for it". Every source is opened
# once at start: adding, removing or changing one (its own fail_safe too) needs a restart.
RESTART = ("device_id", "source", "sources", "named_sources", "runtime.guard_priority",
           "runtime.loop_priority", "runtime.spin_wait", "runtime.metrics_interval_s", "service")
# What a new model (loaded and warmed beside the old one) takes.
MODEL = ("model", "runtime.providers", "runtime.intra_op_threads", "runtime.inter_op_threads",
         "runtime.kernels", "runtime.provider_policy", "runtime.provider_options",
         "runtime.ladder", "runtime.cost_quantile", "motion")


def _get(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def changed(old: Config, new: Config, keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if _get(old, k) != _get(new, k)]


def restart_said(keys: list[str], named: bool) -> str:
    """The keys a reload refuses, as the config spells them: `source` is the first of
    `sources`, so one of the two is said, and a source's fail_safe is part of its source."""
    said = {"sources": "[[sources]] (a source's url, settings or fail_safe, or which there are)",
            "named_sources": "[source] replaced by [[sources]] or back"}
    drop = "source" if named else "sources"
    return ", ".join(said.get(k, k) for k in keys if k != drop)


class Reloader:
    """`requested` is set by the signal handler; `apply` runs on the loop's thread between
    frames, and never waits: a step still under way is looked at again after the next frame."""

    def __init__(self, path: str, status: Callable[[str], None]) -> None:
        self.path, self.status = path, status
        self.requested = threading.Event()
        self.reloads = 0
        self.rejected = 0
        self._job: _Job | None = None

    def apply(self, runtime: Runtime) -> None:
        job = self._job
        try:
            if job is None:
                if not self.requested.is_set():
                    return
                self.requested.clear()   # a SIGHUP during this reload reads the file again after
                job = self._job = _Job(runtime, load_config(self.path))
            if not job.ready(runtime):
                return
        except EdgertError as e:
            self._job = None
            self.rejected += 1
            log.error("reload rejected, the running config stays: %s", e)
            self.status(f"reload rejected: {e}")
            return
        self._job = None
        job.commit(runtime)
        self.reloads += 1
        new = job.new
        log.info("reloaded %s: %s; %d rule(s), %d zone(s), %d line(s)", new.file, job.what,
                 len(new.rules), len(new.zones), len(new.lines))
        self.status(f"reloaded: {job.what}")


class _Job:
    """One reload under way: the model thread, then the outputs, then the switch."""

    def __init__(self, runtime: Runtime, new: Config) -> None:
        from edgert.decide.zones import check_frame
        from edgert.scene import rule_engine
        from edgert.wiring import check_rule_labels

        old = runtime.cfg
        self.new = new
        restart = changed(old, new, RESTART)
        if restart:
            said = restart_said(restart, old.named_sources or new.named_sources)
            raise EdgertError(f"{new.file}: {said} changed, which a running process cannot "
                              "take; restart the service for it")
        self.model = changed(old, new, MODEL)
        self.same_model = (old.model.path, old.model.family, old.model.input, old.model.labels) \
            == (new.model.path, new.model.family, new.model.input, new.model.labels)
        self.what = ", ".join(k for k in (("model" if self.model else ""),
                                           ("outputs" if old.outputs != new.outputs else ""),
                                           "rules") if k)
        frame = runtime._last_frame
        self.image = frame.image.copy() if frame is not None else None
        self.t = frame.media_s if frame is not None else 0.0
        for sid, scene in runtime.scenes.items():   # pixel zones and lines against its frames
            if scene.hw is not None:
                check_frame(new, scene.hw, sid)
        self.engines = {sid: rule_engine(new.for_source(sid)) for sid in runtime.scenes}
        self.built: tuple | BaseException | None = None
        self._thread: threading.Thread | None = None
        self._outputs = False
        if self.model:
            self._thread = threading.Thread(target=self._load, args=(runtime,),
                                            name="edgert-reload", daemon=True)
            self._thread.start()
        else:
            check_rule_labels(new, runtime.rungs[0].decoder.labels)

    def _load(self, runtime: Runtime) -> None:
        """Beside the loop, below it: this thread was born at the loop's real-time priority."""
        from edgert.runtime import thread_ids
        from edgert.wiring import build_rungs, expected_frame_hw, warm_up

        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except (AttributeError, OSError):
            pass
        try:
            before = thread_ids()
            rungs, info = build_rungs(self.new, runtime.clock)
            workers = thread_ids() - before - {threading.get_native_id()}
            image = self.image if self.image is not None else \
                np.full((*expected_frame_hw(self.new), 3), 114, np.uint8)
            baseline = warm_up(self.new, rungs, info, image, runtime.clock)
            self.built = (rungs, info, baseline, workers)
        except BaseException as e:  # noqa: BLE001 - handed to the loop's thread, which says it
            self.built = e

    def ready(self, runtime: Runtime) -> bool:
        """True once everything is prepared; raises EdgertError when a step failed."""
        if self._thread is not None:
            if self._thread.is_alive():
                return False
            self._thread = None
            if isinstance(self.built, EdgertError):
                raise self.built
            if isinstance(self.built, BaseException):
                raise EdgertError(f"{self.new.file}: the new model failed to load: "
                                  f"{type(self.built).__name__}: {self.built}")
        if not self._outputs:
            self._outputs = True
            runtime.herald.prepare(self.new)
        result = runtime.herald.prepared()
        if result is False:
            return False
        if result is not None:
            raise EdgertError(f"{self.new.file}: outputs: {result}")
        return True

    def commit(self, runtime: Runtime) -> None:
        for sid, engine in self.engines.items():   # each source's state, at its own time
            scene = runtime.scenes[sid]
            t = scene.last_frame.media_s if scene.last_frame is not None else self.t
            engine.adopt(scene.rules, t, keep_tracks=self.same_model)
        runtime.herald.commit(self.new)
        runtime.reconfigure(self.new, self.engines, self.built if self.model else None)

