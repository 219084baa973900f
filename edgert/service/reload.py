"""SIGHUP: a new config read and checked off the frame path, swapped in at a frame boundary.

Reloaded: rules, zones (thresholds within rules, e.g. min_score, debounce) and lines. Anything
else that changed (model, thresholds of the decoder, input size, outputs, source, budget) is
refused with a clear line and STATUS=, and the old config keeps running: those need a restart
(`systemctl restart`) until loading a model beside the running one is built."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import TYPE_CHECKING, Callable

from edgert.config import load_config
from edgert.config.types import Config
from edgert.errors import EdgertError

if TYPE_CHECKING:
    from edgert.runtime import Runtime

log = logging.getLogger("edgert.service")

RELOADABLE = ("rules", "zones", "lines")


class Reloader:
    """`requested` is set by the signal handler; `apply` runs on the loop's thread between frames."""

    def __init__(self, path: str, status: Callable[[str], None]) -> None:
        self.path, self.status = path, status
        self.requested = threading.Event()
        self.reloads = 0
        self.rejected = 0

    def apply(self, runtime: Runtime) -> None:
        if not self.requested.is_set():
            return
        self.requested.clear()
        try:
            new = load_config(self.path)
            engine = self._engine(runtime, new)
        except EdgertError as e:
            self.rejected += 1
            log.error("reload rejected, the running config stays: %s", e)
            self.status(f"reload rejected: {e}")
            return
        for pipeline in runtime.rungs:   # one engine shared by every rung, as at start
            pipeline.rules = engine
        runtime.cfg = new
        self.reloads += 1
        log.info("reloaded %s: %d rule(s), %d zone(s), %d line(s)", new.file, len(new.rules),
                 len(new.zones), len(new.lines))
        self.status(f"reloaded {len(new.rules)} rule(s), {len(new.zones)} zone(s)")

    @staticmethod
    def _engine(runtime: Runtime, new: Config):   # noqa: ANN205 - RuleEngine
        from edgert.decide import RuleEngine
        from edgert.wiring import check_rule_labels

        old = runtime.cfg
        changed = [f.name for f in dataclasses.fields(Config)
                   if f.name not in RELOADABLE and getattr(new, f.name) != getattr(old, f.name)]
        if changed:
            raise EdgertError(f"{new.file}: {', '.join(changed)} changed, which a reload does not "
                              "apply (rules, zones and lines only); restart the service for it")
        check_rule_labels(new, runtime.rungs[0].decoder.labels)
        return RuleEngine(new.rules, new.zones)
