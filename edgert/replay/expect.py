"""--expect: this replay's decisions against a golden decisions.jsonl, content only.

Tolerances: scores within 0.02 absolute, box corners and keypoints within 2 px (attributes:
the same label, the score within 0.02). A golden file must survive another CPU, another
onnxruntime build and another FFmpeg: float reductions in a different order move scores in
the third decimal and boxes by a fraction of a pixel; anything larger is a change in
behaviour, not in arithmetic. Timing is never compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from edgert.records import Decision, Det, Verdict

SCORE_TOL = 0.02
BOX_TOL_PX = 2.0
SHOWN = 3   # differing frames printed side by side


@dataclass(frozen=True, slots=True)
class Difference:
    frame_id: int
    golden: Verdict | None
    replayed: Verdict | None


def _det_close(a: Det, b: Det) -> bool:
    if a.label != b.label or a.class_id != b.class_id or abs(a.score - b.score) > SCORE_TOL:
        return False
    if (a.box is None) != (b.box is None) or (a.box is not None and not all(
            abs(x - y) <= BOX_TOL_PX for x, y in zip(a.box, b.box))):
        return False
    return _keypoints_close(a, b) and _attributes_close(a, b)


def _keypoints_close(a: Det, b: Det) -> bool:
    """Keypoints as boxes: x, y within the box tolerance, scores within the score tolerance."""
    if a.keypoints is None or b.keypoints is None:
        return a.keypoints is None and b.keypoints is None
    if len(a.keypoints) != len(b.keypoints):
        return False
    for (x1, y1, s1), (x2, y2, s2) in zip(a.keypoints, b.keypoints):
        if abs(x1 - x2) > BOX_TOL_PX or abs(y1 - y2) > BOX_TOL_PX:
            return False
        if (s1 is None) != (s2 is None) or (s1 is not None and abs(s1 - s2) > SCORE_TOL):
            return False
    return True


def _attributes_close(a: Det, b: Det) -> bool:
    if a.attributes is None or b.attributes is None:
        return a.attributes is None and b.attributes is None
    if a.attributes.keys() != b.attributes.keys():
        return False
    return all(x.label == y.label and x.class_id == y.class_id
               and abs(x.score - y.score) <= SCORE_TOL
               for x, y in ((a.attributes[k], b.attributes[k]) for k in a.attributes))


def _dets_match(a: Sequence[Det], b: Sequence[Det]) -> bool:
    """Same detections within tolerance, in any order: two near-equal scores may swap places."""
    if len(a) != len(b):
        return False
    left = list(b)
    for d in a:
        hit = next((i for i, e in enumerate(left) if _det_close(d, e)), None)
        if hit is None:
            return False
        left.pop(hit)
    return True


def same(a: Verdict, b: Verdict) -> bool:
    return ((a.status, a.action, a.rule, a.cause, a.stage, a.rung, a.hold_expired, a.source_id)
            == (b.status, b.action, b.rule, b.cause, b.stage, b.rung, b.hold_expired,
                b.source_id) and _dets_match(a.detections, b.detections))


def compare(golden: Sequence[Decision], replayed: Sequence[Decision]) -> list[Difference]:
    """Every frame whose content differs, or that only one side decided, in frame order."""
    g = {d.verdict.frame_id: d.verdict for d in golden}
    r = {d.verdict.frame_id: d.verdict for d in replayed}
    out = []
    for fid in sorted(g.keys() | r.keys()):
        a, b = g.get(fid), r.get(fid)
        if a is None or b is None or not same(a, b):
            out.append(Difference(fid, a, b))
    return out


def _lines(v: Verdict | None) -> list[str]:
    if v is None:
        return ["(no decision)"]
    head = f"{v.status} action={v.action}" + (f" rule={v.rule}" if v.rule else "")
    if v.cause:
        head += f" cause={v.cause}@{v.stage}"
    dets = [f"  {d.label} {d.score:.3f} "
            + ("" if d.box is None else "[" + ", ".join(f"{x:.1f}" for x in d.box) + "]")
            + ("" if d.keypoints is None else f" {len(d.keypoints)} keypoints")
            + "".join(f" {k}={a.label}" for k, a in (d.attributes or {}).items())
            for d in v.detections]
    return [head, *dets] if dets else [head, "  (no detections)"]


def format_diff(diffs: Sequence[Difference], compared: int, name: str) -> str:
    """The first differing frames, golden left and this replay right, and the count."""
    width = 58
    rows = [f"{name}: {len(diffs)} of {compared} frame(s) differ from the golden file "
            f"(scores ±{SCORE_TOL}, boxes ±{BOX_TOL_PX:g} px)"]
    for d in diffs[:SHOWN]:
        rows.append(f"frame {d.frame_id}:")
        rows.append(f"  {'golden':<{width}} | this replay")
        left, right = _lines(d.golden), _lines(d.replayed)
        for i in range(max(len(left), len(right))):
            a = left[i] if i < len(left) else ""
            b = right[i] if i < len(right) else ""
            rows.append(f"  {a[:width]:<{width}} | {b}")
    if len(diffs) > SHOWN:
        rows.append(f"… and {len(diffs) - SHOWN} more")
    return "\n".join(rows)
