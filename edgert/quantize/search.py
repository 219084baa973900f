"""Find the fewest float nodes that keep INT8 faithful: doubling, then bisection, over the ranking."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from edgert.quantize.measure import Agreement
from edgert.quantize.sensitivity import Site


@dataclass(frozen=True, slots=True)
class Trial:
    """One candidate model: the k most harmful sites kept float, and how faithful it was."""

    sites: int
    nodes: tuple[str, ...]
    agreement: Agreement
    path: Path


def float_nodes(ranked: Sequence[Site], k: int) -> tuple[str, ...]:
    """Nodes to exclude so the k most harmful sites stay float (in ranking order, no repeats)."""
    return tuple(dict.fromkeys(n for site in ranked[:k] for n in site.nodes))


def largest_k(ranked: Sequence[Site], max_nodes: int) -> int:
    """The most sites that fit in `max_nodes` float nodes."""
    k = 0
    while k < len(ranked) and len(float_nodes(ranked, k + 1)) <= max_nodes:
        k += 1
    return k


def search(try_nodes: Callable[[Sequence[str]], tuple[Agreement, Path]], ranked: Sequence[Site],
           threshold: float, max_nodes: int,
           start: Trial | None = None) -> tuple[Trial, tuple[Trial, ...]]:
    """(chosen trial, every trial in the order run).

    The chosen trial is the smallest k found that meets `threshold` both ways; when none
    does within `max_nodes`, the most faithful one tried (fewer float nodes on a tie).
    Agreement is not strictly monotonic in k, so this finds a small k, not provably the least.
    """
    trials: list[Trial] = [start] if start is not None else []
    by_nodes: dict[tuple[str, ...], Trial] = {start.nodes: start} if start is not None else {}

    def attempt(k: int) -> Trial:
        nodes = float_nodes(ranked, k)
        if nodes not in by_nodes:
            agreement, path = try_nodes(nodes)
            by_nodes[nodes] = Trial(k, nodes, agreement, path)
            trials.append(by_nodes[nodes])
        return by_nodes[nodes]

    if start is not None and start.agreement.meets(threshold):
        return start, tuple(trials)
    top = largest_k(ranked, max_nodes)
    low, high = 0, None
    k = 1
    while top and high is None:
        k = min(k, top)
        if attempt(k).agreement.meets(threshold):
            high = k
        else:
            low = k
            if k == top:
                break
            k *= 2
    while high is not None and high - low > 1:
        mid = (low + high) // 2
        if attempt(mid).agreement.meets(threshold):
            high = mid
        else:
            low = mid
    if high is None and top:
        # Nothing passed and agreement is noisy in k: look once either side of the best.
        best = max(trials, key=lambda t: t.agreement.worst).sites
        tried = sorted({t.sites for t in trials} | {0, top})
        at = tried.index(best) if best in tried else 0
        below, above = tried[max(at - 1, 0)], tried[min(at + 1, len(tried) - 1)]
        for lo, hi in ((below, best), (best, above)):
            if hi - lo > 1:
                attempt((lo + hi) // 2)
    passing = [t for t in trials if t.agreement.meets(threshold)]
    if passing:
        chosen = min(passing, key=lambda t: (len(t.nodes), t.sites))
    else:
        chosen = max(trials, key=lambda t: (t.agreement.worst, -len(t.nodes)))
    return chosen, tuple(trials)
