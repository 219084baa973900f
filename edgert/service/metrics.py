"""Prometheus /metrics and /healthz over HTTP, served on a thread of their own from the latest
`Snapshot` (never from the loop's live counters), so a scrape costs the loop nothing."""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

from edgert.errors import EdgertError
from edgert.service.snapshot import Snapshot

log = logging.getLogger("edgert.service")


def _families(snap: Snapshot, stalled_for: float) -> Iterator[object]:
    from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                        HistogramMetricFamily)

    records = CounterMetricFamily("edgert_records", "Decision records published, by status",
                                  labels=["status"])
    for status, n in snap.counts.items():
        if status != "records":
            records.add_metric([status], n)
    yield records
    misses = CounterMetricFamily("edgert_deadline_misses", "Frames whose deadline passed "
                                 "first, by stage and cause", labels=["stage", "cause"])
    for (stage, cause), n in snap.misses.items():
        misses.add_metric([stage, cause], n)
    yield misses
    hist = HistogramMetricFamily("edgert_stage_latency_ms", "Per-stage latency of decided "
                                 "frames (ms)", labels=["stage"])
    for stage, h in snap.latency.items():
        hist.add_metric([stage], [("+Inf" if b == float("inf") else f"{b:g}", c)
                                  for b, c in h.buckets], h.sum_ms)
    yield hist
    src = snap.source
    for name, key, doc in (("edgert_source_frames", "frames", "Frames captured"),
                           ("edgert_source_dropped_frames", "dropped",
                            "Frames overwritten before the loop took them (newest wins)"),
                           ("edgert_source_skipped_frames", "skipped", "Frames skipped for fps"),
                           ("edgert_source_failures", "failures", "Failed opens, reads, stalls"),
                           ("edgert_source_reconnects", "reopens", "Times the source came back")):
        yield CounterMetricFamily(name, doc, value=src.get(key, 0))
    outs = GaugeMetricFamily("edgert_output", "Each output's own counters (queue depth: "
                             "queued; reconnects: connects …), as sent on the metrics topic",
                             labels=["output", "counter"])
    for out, stats in snap.outputs.items():
        for k, v in stats.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                outs.add_metric([out, k], v)
    yield outs
    prov = GaugeMetricFamily("edgert_provider_bound", "Execution providers: 1 bound, 0 "
                             "requested but not bound", labels=["provider"])
    for p in snap.providers:
        prov.add_metric([p], 1)
    for p in snap.not_bound:
        prov.add_metric([p], 0)
    yield prov
    yield GaugeMetricFamily("edgert_ladder_rung", "The ladder's rung in force (0: main model)",
                            value=snap.rung)
    yield GaugeMetricFamily("edgert_fps", "Decision records per second, recently", value=snap.fps)
    yield GaugeMetricFamily("edgert_seconds_since_progress", "Seconds since the loop last "
                            "decided a frame or waited on its source", value=stalled_for)


class Served:
    """The HTTP server and its thread; `close` stops both."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self.server, self.thread = server, thread
        self.address = server.server_address[:2]

    @classmethod
    def start(cls, address: tuple[str, int], snapshot: Callable[[], Snapshot],
              since_progress: Callable[[], float], stall_s: float) -> Served:
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        class Collector:
            def collect(self) -> Iterator[object]:
                return _families(snapshot(), since_progress())

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Collector())

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:   # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                if path == "/metrics":
                    self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    age = since_progress()
                    ok = age <= stall_s
                    self._answer(200 if ok else 503, (f"{'ok' if ok else 'stalled'}: last "
                                 f"progress {age:.1f} s ago (stall_s {stall_s:g})\n").encode(),
                                 "text/plain; charset=utf-8")
                else:
                    self._answer(404, b"/metrics or /healthz\n", "text/plain; charset=utf-8")

            def _answer(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:   # scrapes stay out of the journal
                pass

        host, port = address

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

        try:
            server = Server((host, port), Handler)
        except OSError as e:
            raise EdgertError(f"service.metrics_listen: cannot listen on {host}:{port} "
                              f"({e.strerror})") from None
        thread = threading.Thread(target=server.serve_forever, name="edgert-metrics", daemon=True)
        thread.start()
        return cls(server, thread)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
