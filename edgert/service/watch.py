"""The service's eyes on the loop: progress for systemd's watchdog and /healthz, and the figures
for /metrics. It hangs on the loop's `Watch` hook; `run` without it is unchanged."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edgert.config.types import Config
from edgert.publish.herald import Outcome
from edgert.records import Metrics
from edgert.watch import Watch
from edgert.service.notify import Notifier
from edgert.service.reload import Reloader
from edgert.service.snapshot import Histograms, Snapshot
from edgert.service.watchdog import Watchdog

if TYPE_CHECKING:
    from edgert.runtime import Runtime
    from edgert.service.metrics import Served

log = logging.getLogger("edgert.service")

SNAPSHOT_S = 0.25    # the figures /metrics serves are at most this old (while the loop runs)


class ServiceWatch(Watch):
    """Everything here runs on the loop's thread, after a frame's record was handed over,
    except what `Served` reads: two floats and the latest immutable `Snapshot`."""

    def __init__(self, cfg: Config, watchdog: Watchdog, reloader: Reloader | None = None) -> None:
        self.cfg, self.watchdog, self.reloader = cfg, watchdog, reloader
        self.stall_s = cfg.service.stall_s
        self._stall_timeout_s = max(src.stall_timeout_s for src in cfg.sources)
        self.snapshot = Snapshot(at=0.0)
        self.served: Served | None = None
        self._rt: Runtime | None = None
        self._hist = Histograms()
        self._last_progress: float | None = None   # None: not ready yet
        self._last_frame = 0.0
        self._next_snap = 0.0
        self._fps_mark: tuple[float, int] = (0.0, 0)

    @classmethod
    def from_env(cls, cfg: Config, path: str | None = None) -> ServiceWatch:
        """With `path`, SIGHUP (see `reloader.requested`) reloads it between frames."""
        watchdog = Watchdog.from_env(Notifier.from_env())
        return cls(cfg, watchdog, Reloader(path, watchdog.status) if path else None)

    # Read from other threads.

    def since_progress(self) -> float:
        if self._rt is None or self._last_progress is None:
            return float("inf")   # not ready: fails closed
        return max(0.0, self._rt.clock.now() - self._last_progress)

    def current(self) -> Snapshot:
        return self.snapshot

    # The loop's hooks.

    def on_ready(self, runtime: Runtime) -> None:
        self._rt = runtime
        now = runtime.clock.now()
        self._last_frame = now
        self._fps_mark = (now, 0)
        self._progress(now)
        listen = self.cfg.service.metrics_listen
        if listen is not None and self.served is None:
            from edgert.service.metrics import Served
            self.served = Served.start(listen, self.current, self.since_progress, self.stall_s)
            log.info("metrics on http://%s:%d/metrics, health on /healthz",
                     *self.served.address)

    def on_outcome(self, outcome: Outcome) -> None:
        if self._rt is None:
            return
        now = self._rt.clock.now()
        self._last_frame = now
        self._progress(now)

    def on_idle(self, source_state: str) -> None:
        if self._rt is None:
            return
        now = self._rt.clock.now()
        # Waiting is progress while the source says it is reopening, or has not yet had the
        # time its own stall timeout allows; past that, a source stuck in a read is no loop.
        if source_state == "reopening" or \
                now - self._last_frame < self._stall_timeout_s + self.stall_s:
            self._progress(now)

    def on_metrics(self, metrics: Metrics) -> None:
        self._next_snap = 0.0   # the outputs' counters came with it: publish them soon

    # Inside.

    def _progress(self, now: float) -> None:
        """Between frames, on the loop's thread: the frame boundary a reload waits for."""
        self._last_progress = now
        if self.reloader is not None and self._rt is not None:
            self.reloader.apply(self._rt)
        if now >= self._next_snap:
            self._next_snap = now + SNAPSHOT_S
            self.snapshot = self._take(now)   # one reference swap: readers see old or new
        self.watchdog.beat(now, self._status_line)

    @property
    def _status_line(self) -> str:
        s = self.snapshot
        misses = sum(s.misses.values())
        return (f"{s.fps:.1f} fps, {misses} missed of {s.counts.get('records', 0)}, rung "
                f"{s.rung_name}, providers {','.join(s.providers) or '?'}"
                + (f" (not bound: {','.join(s.not_bound)})" if s.not_bound else ""))

    def _take(self, now: float) -> Snapshot:
        rt = self._rt
        assert rt is not None
        summary = rt.summary
        t0, n0 = self._fps_mark
        fps = (summary.records - n0) / (now - t0) if now - t0 >= 1.0 else self.snapshot.fps
        if now - t0 >= 5.0:
            self._fps_mark = (now, summary.records)
        every = [s.stats() for s in rt.sources]   # several sources: their counters summed
        rung = rt.ladder.rung if rt.ladder is not None else 0
        return Snapshot(
            at=now, counts=summary.counts(),
            misses={(st, c): n for st, by in summary.misses.items() for c, n in by.items()},
            latency=self._hist.update(summary.latency),
            source={k: sum(getattr(st, k) for st in every)
                    for k in ("frames", "dropped", "skipped", "failures", "reopens")},
            outputs=getattr(rt.herald, "output_stats", {}),
            providers=tuple(rt.info.providers), not_bound=tuple(rt.info.not_bound),
            rung=rung, rung_name=rt.rungs[rung].name, fps=fps)

    def close(self) -> None:
        if self.served is not None:
            self.served.close()
            self.served = None
