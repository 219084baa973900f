"""Secondary models on crops of the primary's detections, run only while the frame's deadline
allows, highest primary score first; what was not reached says so in the record.

Each run is predicted from learned costs (one crop alone; each further crop in a batch) and
started only if it fits in what is left before the stages that must follow (decide, publish);
a batch shrinks to what fits. The guard stops a secondary run at the deadline as it stops the
primary's: the loop points the frame's ticket at the running session.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np

from edgert.config.types import SecondaryConfig
from edgert.costs import StageCosts
from edgert.frame import Detections, label_of
from edgert.guard import Ticket
from edgert.infer.runner import InferenceRunner
from edgert.postprocess.classify import probabilities
from edgert.postprocess.user import unpack
from edgert.preprocess.crops import CropPreprocessor
from edgert.records import Attr

log = logging.getLogger("edgert")

SAFETY = 1.25   # a run is started only if 1.25x its predicted cost fits
PROBE_AFTER = 256   # frames refused in a row before one crop is tried anyway (8.5 s at 30 fps)
BUDGET = Attr("", -1, 0.0, "budget")
MAX_CROPS = Attr("", -1, 0.0, "max_crops")
ERROR = Attr("", -1, 0.0, "error")

# A batch's outputs for crop j → (class id, score, keypoints in the crop's input pixels or
# None), or None for "nothing found".
Reader = Callable[[Sequence[np.ndarray], int], "tuple[int, float, np.ndarray | None] | None"]


def classify_reader(output_index: int) -> Reader:
    """[N, classes] logits or probabilities → the top class of row j."""
    def read(outputs: Sequence[np.ndarray], j: int) -> tuple[int, float, None] | None:
        x = probabilities(outputs[output_index][j].reshape(-1).astype(np.float64))
        c = int(np.argmax(x))
        return c, float(x[c]), None
    return read


def user_reader(fn: Callable[..., Any], ctx: Any, name: str) -> Reader:
    """A user decoder on one crop's outputs (any form the decoder contract allows): its
    best-scoring result."""
    def read(outputs: Sequence[np.ndarray], j: int) -> tuple[int, float, Any] | None:
        _, scores, class_ids, kps = unpack(fn([o[j:j + 1] for o in outputs], ctx), name)
        scores = np.asarray(scores, np.float64).reshape(-1)
        if scores.size == 0:
            return None
        best = int(np.argmax(scores))
        points = None if kps is None else np.asarray(kps, np.float64)[best]
        return int(np.asarray(class_ids).reshape(-1)[best]), float(scores[best]), points
    return read


class SecondaryStage:
    """One [[model.secondary]]: its session, crop buffers, reader and learned costs."""

    def __init__(self, cfg: SecondaryConfig, runner: InferenceRunner, crops: CropPreprocessor,
                 read: Reader, labels: tuple[str, ...], batch: int, quantile: float = 0.5) -> None:
        self.cfg, self.name, self.runner, self.crops = cfg, cfg.name, runner, crops
        self.read, self.labels, self.batch = read, labels, batch
        self.conf = cfg.model.conf
        # "one": a run of one crop; "more": each further crop in a batch. A probe may cost its
        # frame, so it comes only after many frames on which not even one crop fitted.
        self.costs = StageCosts(quantile=quantile, probe_after=PROBE_AFTER)
        self._on_labels: tuple[str, ...] | None = None
        self._on = np.zeros(1, np.bool_)
        self.runs = self.crops_run = self.cut_short = self.errors = 0
        self._seen = 0.0   # the last run's seconds per crop

    def _wanted(self, det: Detections) -> np.ndarray:
        """Indices of the detections to crop, best primary score first (detections come so)."""
        if det.labels is not self._on_labels:
            self._on_labels = det.labels
            on = self.cfg.on
            self._on = np.array([not on or lab in on for lab in det.labels] + [not on], np.bool_)
        ids = np.where((det.class_ids >= 0) & (det.class_ids < len(det.labels)), det.class_ids,
                       len(det.labels))
        return np.flatnonzero(self._on[ids] & (det.scores >= self.cfg.min_score))

    def cost(self, k: int) -> float:
        """Predicted seconds for a run of k crops; until enough runs were seen to learn from,
        the last run's cost per crop stands in."""
        one = self.costs.expected("one") or self._seen
        return one + (k - 1) * (self.costs.expected("more") or one)

    def _fit(self, left: float, n: int) -> int:
        """How many of `n` crops the next run may take with `left` seconds to spare (with a
        quarter more than predicted kept back: a run that overruns loses the whole frame);
        one, the very first time, to learn what a crop costs."""
        if self.cost(1) == 0.0:
            return 1
        k = min(n, self.batch)
        while k > 0 and self.cost(k) * SAFETY > left:
            k -= 1
        return k

    def run(self, t: Ticket, det: Detections, attrs: list, reserve_s: float,
            now: Callable[[], float], probe: bool) -> bool:
        """Fill `attrs` (one slot per detection) for the detections this stage crops. Returns
        False when the guard stopped a run (the deadline has passed)."""
        wanted = self._wanted(det)
        if wanted.size == 0:
            return True
        for i in wanted[self.cfg.max_crops:]:
            attrs[i] = _put(attrs[i], self.name, MAX_CROPS)
        wanted = wanted[:self.cfg.max_crops]
        image, hw = t.frame.image, (t.frame.height, t.frame.width)
        done, ok = 0, True
        # After many frames on which not even one crop fitted, one crop runs whatever the
        # estimate says: a cost learned on a busy spell must not shut the stage for good.
        probe = probe or self.costs.probe()
        while done < wanted.size:
            left = t.deadline.at - now() - reserve_s
            k = self._fit(left, wanted.size - done)
            if k == 0 and probe:
                k, probe = 1, False   # the learned costs may be stale: one run to learn from
            elif k == 0 and done == 0:
                self.costs.refused()
            if k == 0 or left <= 0.0:
                break
            rows = wanted[done:done + k]
            t0 = now()
            for j, i in enumerate(rows):
                self.crops.write(j, image, self.crops.box(det.boxes[i], hw))
            self.runner.reset()      # a stop meant for an earlier frame
            t.runner = self.runner   # the guard stops this run at the deadline
            result = self.runner.run(self.crops.tensor[:k])
            took = now() - t0
            self._learn(k, took, result.stopped)
            self._seen = max(self._seen, took / k) if result.stopped else took / k
            if result.outputs is None:
                if result.stopped:
                    ok = False
                    break
                self._error(result.error)
                for i in rows:
                    attrs[i] = _put(attrs[i], self.name, ERROR)
                done += k
                continue
            for j, i in enumerate(rows):
                attrs[i] = _put(attrs[i], self.name, self._attr(result.outputs, j))
            done += k
            self.runs += 1
            self.crops_run += k
        if done < wanted.size:
            self.cut_short += 1
            for i in wanted[done:]:
                attrs[i] = _put(attrs[i], self.name, BUDGET)
        return ok

    def _attr(self, outputs: Sequence[np.ndarray], j: int) -> Attr:
        try:
            got = self.read(outputs, j)
        except Exception as e:  # a user decoder's mistake: counted, never fatal
            self._error(f"{type(e).__name__}: {e}")
            return ERROR
        if got is None:
            return Attr("", -1, 0.0, "nothing")
        c, score, points = got
        label = label_of(c, self.labels)
        kps = None
        if points is not None:   # a landmarks decoder: its points, in frame pixels
            xy = self.crops.to_frame(j, points).round(1).tolist()
            kps = tuple((p[0], p[1], round(p[2], 4) if len(p) > 2 else None) for p in xy)
        return Attr(label, c, round(score, 4), None if score >= self.conf else "low_score", kps)

    def _learn(self, k: int, took: float, stopped: bool) -> None:
        if k == 1 or stopped:   # a batch stopped at the deadline: the stage does not fit
            self.costs.observe("one", took, stopped)
        elif not stopped and self.costs.expected("one") > 0.0:
            self.costs.observe("more", max(0.0, took - self.costs.expected("one")) / (k - 1))

    def _error(self, error: str | None) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 1000 == 0:
            log.warning("secondary model %r failed on %d run(s) so far: %s", self.name,
                        self.errors, error)


def _put(current: dict | None, name: str, attr: Attr) -> dict:
    if current is None:
        return {name: attr}
    current[name] = attr
    return current


def run_all(stages: Sequence[SecondaryStage], t: Ticket, det: Detections, reserve_s: float,
            now: Callable[[], float], probe: bool) -> tuple[Detections, bool]:
    """Every secondary stage in config order on `det`; the detections with their attributes,
    and False when the deadline stopped a run."""
    attrs: list = [None] * len(det)
    primary = t.runner
    try:
        for stage in stages:
            if not stage.run(t, det, attrs, reserve_s, now, probe):
                return det, False
    finally:
        t.runner = primary
    if not any(a is not None for a in attrs):
        return det, True
    return Detections(det.boxes, det.scores, det.class_ids, det.labels, det.track_ids,
                      det.keypoints, tuple(attrs)), True
