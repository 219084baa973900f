"""The report and the verdict: recommend INT8 only when it is both faithful and faster."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from edgert.quantize.measure import MAX_SCORE_SHIFT, NEAR, Agreement

# Faster means at least this ratio of medians: below it, noise on a shared board can flip it.
SPEED_MARGIN = 1.05


@dataclass(frozen=True, slots=True)
class Candidate:
    """A quantized model as measured: which nodes stayed float, how faithful, how fast."""

    label: str                       # "INT8" (everything quantized) or "mixed"
    float_nodes: tuple[str, ...]
    float_op_types: tuple[str, ...]  # op type of each float node, same order
    agreement: Agreement
    median_ms: float

    def op_summary(self) -> str:
        counts = Counter(self.float_op_types)
        return ", ".join(f"{op} {n}" for op, n in counts.most_common()) or "none"


@dataclass(frozen=True, slots=True)
class QuantizeReport:
    """Everything `edgert quantize` measured; `verdict` is the one sentence to act on."""

    model: Path
    out: Path
    calib: Path
    described_by: str
    family: str
    method: str
    preparation: str
    calib_frames: int
    eval_frames: int                # frames the reported agreement is measured on
    search_frames: int              # frames the search chose on
    judged_apart: bool              # the reported agreement is on frames the search never saw
    eval_note: str
    held_out: bool
    tail: tuple[tuple[str, str], ...]   # (node, op type) of the output tail, float throughout
    max_float_nodes: int            # the search's float-node budget (the tail not counted)
    threshold: float
    runs: int
    threads: int
    fp32_ms: float
    plain: Candidate
    chosen: Candidate
    trials: tuple[tuple[int, int, float, float], ...]   # (sites, float nodes, kept, confirmed)
    sensitive: tuple[tuple[str, str, float], ...]        # top of the ranking: (tensor, op, error)
    recommended: bool
    verdict: str
    chance: Agreement | None = None   # FP32 vs itself on other frames (`chance_agreement`)

    @property
    def judged(self) -> bool:
        """Agreement on these frames can tell a faithful model from one ignoring its input."""
        return not degenerate(self.chance, self.threshold)

    def speedup(self, c: Candidate) -> float:
        return self.fp32_ms / c.median_ms if c.median_ms > 0 else float("nan")


def degenerate(chance: Agreement | None, threshold: float) -> bool:
    """A model that ignored its input would meet the threshold: agreement proves nothing."""
    return chance is not None and chance.meets(threshold)


def decide(chosen: Candidate, fp32_ms: float, threshold: float, max_nodes: int,
           chance: Agreement | None = None) -> tuple[bool, str]:
    """(recommended, verdict sentence) for the chosen candidate; `chance` as in
    `measure.chance_agreement`."""
    a, ratio = chosen.agreement, fp32_ms / chosen.median_ms
    n = len(chosen.float_nodes)
    what = f"mixed model ({n} nodes float)" if n else "INT8 model"
    faithful, fast = a.meets(threshold), ratio >= SPEED_MARGIN
    if not a.measurable:
        return False, (f"Keep FP32 until agreement can be measured: FP32 found nothing on the "
                       f"{a.frames} evaluation frames (INT8 runs {ratio:.2f}× as fast); evaluate "
                       "on frames with objects the model detects, or lower model.conf.")
    if chance is not None and degenerate(chance, threshold):
        same = "top-1 class hardly depends" if a.kind == "top1" else "detections hardly depend"
        return False, (f"Keep FP32: agreement could not be judged: FP32's {same} on "
                       f"the frame ({_chance(chance)}), so a model that ignored its input would "
                       f"agree as well (INT8 runs {ratio:.2f}× as fast); judge on frames where "
                       "the model's output changes: trained weights, a realistic model.conf, "
                       "varied scenes.")
    both = _both_ways(a)
    if faithful and fast:
        return True, (f"Use the {what}: {both} (threshold {threshold:.0%}) and it runs "
                      f"{ratio:.2f}× as fast as FP32.")
    if faithful:
        return False, (f"Keep FP32: the {what} is faithful ({both}) but runs only {ratio:.2f}× "
                       f"as fast as FP32 (needs ≥ {SPEED_MARGIN:.2f}×), so it is not worth its risk.")
    limit = f"with ≤ {max_nodes} float nodes" if chosen.float_nodes else "plain"
    slow = "" if fast else f", and it is not faster either ({ratio:.2f}×)"
    if a.worst >= threshold and not a.scores_kept:
        return False, (f"Keep FP32: the {what} finds the same objects ({both}) but its scores "
                       f"differ from FP32's by {a.score_shift:.2f} on average (limit "
                       f"{MAX_SCORE_SHIFT:g}), so score thresholds would act differently{slow}.")
    return False, (f"Keep FP32: no INT8 candidate {limit} keeps ≥ {threshold:.0%} of detections "
                   f"both ways (best, the {what}: {both}){slow}."
                   if a.kind == "detections" else
                   f"Keep FP32: no INT8 candidate {limit} agrees on ≥ {threshold:.0%} of top-1 "
                   f"classes (best, the {what}: {a.kept:.0%}){slow}.")


def _both_ways(a: Agreement) -> str:
    if a.kind == "top1":
        return f"its top-1 class agrees with FP32 on {a.kept:.0%} of frames"
    return (f"it keeps {a.kept:.0%} of FP32's detections and {a.confirmed:.0%} of its own "
            "match FP32's")


def _chance(c: Agreement) -> str:
    if c.kind == "top1":
        return f"the same top-1 class on {c.kept:.0%} of frame pairs"
    return (f"one frame's detections match another frame's {c.kept:.0%} / {c.confirmed:.0%}, "
            f"scores {c.score_shift:.3f} apart")


def _agreement(a: Agreement) -> str:
    if not a.measurable:
        return f"agreement not measurable: FP32 found nothing (this: {a.candidate})"
    if a.kind == "top1":
        return f"top-1 agrees {a.kept:6.1%} ({a.matched}/{a.frames} frames)"
    lost = a.reference - a.matched
    marginal = f", {a.lost_marginal} of the {lost} lost were marginal" if lost else ""
    shift = f"; matched scores differ by {a.score_shift:.3f} on average" if a.matched else ""
    return (f"kept {a.kept:6.1%}  confirmed {a.confirmed:6.1%}  "
            f"({a.matched} matched; FP32 {a.reference}, this {a.candidate}{marginal}{shift})")


def format_report(r: QuantizeReport) -> str:
    """The report as plain text for a terminal, verdict last."""
    status = "recommended" if r.recommended else "NOT recommended (written for inspection)"
    lines = [
        f"edgert quantize {r.model.name} → {r.out}: {status}",
        f"  model: family {r.family}, described by {r.described_by}; {r.preparation}",
        f"  calibration: {r.calib_frames} frames of {r.calib.name} ({r.method})",
        f"  agreement on {r.eval_note}" + ("" if r.held_out else "  [not held out]"),
        (f"    candidates were chosen on {r.search_frames} of them; the figures below are on "
         f"the other {r.eval_frames}" if r.judged_apart else
         f"    candidates were chosen on these same {r.eval_frames} frames (too few to split), "
         "so the figures below may flatter the chosen model"),
        f"  latency: median of {r.runs} interleaved runs each, {r.threads} threads",
        f"    {'FP32':<16} {r.fp32_ms:8.2f} ms",
    ]
    shown = [r.plain] if r.chosen.float_nodes == r.plain.float_nodes else [r.plain, r.chosen]
    for c in shown:
        name = "INT8" if not c.float_nodes else f"mixed ({len(c.float_nodes)} float)"
        lines.append(f"    {name:<16} {c.median_ms:8.2f} ms  {r.speedup(c):5.2f}×  "
                     + _agreement(c.agreement))
    if any(c.agreement.lost_marginal for c in shown):
        lines.append(f"    (marginal: scored below conf + {NEAR:g} in FP32, where a small score "
                     "change drops a detection)")
    if r.chance is not None and r.chance.measurable:
        lines.append(f"  FP32 on other frames (what ignoring the input would score): "
                     + _chance(r.chance) + ("" if r.judged else "  [agreement not judged]"))
    if r.tail:
        counts = Counter(op for _, op in r.tail)
        lines.append(f"  output tail kept float in every candidate ({len(r.tail)} nodes: "
                     + ", ".join(f"{op} {n}" for op, n in counts.most_common())
                     + "): decode and layout ops that would put scores and boxes on one scale")
    if r.chosen.float_nodes:
        lines.append(f"  float nodes in the chosen model: {r.chosen.op_summary()}: "
                     + ", ".join(r.chosen.float_nodes))
    if len(r.trials) > 1:
        lines.append("  search (sites, float nodes → kept / confirmed, on the choosing frames): "
                     + "; ".join(
            f"{k}, {n} → {kept:.0%} / {conf:.0%}" for k, n, kept, conf in r.trials))
    if r.sensitive:
        lines.append("  most harmful to quantize: " + ", ".join(
            f"{t} ({op}) {e:.3g}" for t, op, e in r.sensitive))
    lines.append(f"  verdict: {r.verdict}")
    return "\n".join(lines)
