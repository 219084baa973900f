"""Few float nodes that keep INT8 faithful: forward selection down the ranking, on real models."""

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
           threshold: float, max_nodes: int, start: Trial | None = None,
           margin: float = 1.0) -> tuple[Trial, tuple[Trial, ...]]:
    """(chosen trial, every trial in the order run).

    Forward selection down the ranking, in blocks that double (sites 1, 2, 3-4, 5-8, …):
    a block stays float only if the candidate with it is more faithful on the choosing
    frames than the best so far (`Agreement.worst`); a block that does not help is dropped,
    after one try of its first half. Floating a site can make a quantized model *less*
    faithful (on YOLOX-nano, floating the SPP's last Conv costs 6-8 % of the detections,
    every time), so a site is never kept float on the ranking's word alone.

    The first candidate that clears `threshold` both ways by `margin` standard errors
    (`Agreement.clears`) ends the walk; its last block is then bisected for the fewest
    nodes that still clear it. When none does within `max_nodes`, the chosen trial is the
    most faithful one tried (fewer float nodes on a tie).
    """
    trials: list[Trial] = [start] if start is not None else []
    by_nodes: dict[tuple[str, ...], Trial] = {start.nodes: start} if start is not None else {}

    def passes(t: Trial) -> bool:
        return t.agreement.clears(threshold, margin)

    def attempt(sites: Sequence[Site]) -> Trial:
        nodes = float_nodes(sites, len(sites))
        if nodes not in by_nodes:
            agreement, path = try_nodes(nodes)
            by_nodes[nodes] = Trial(len(sites), nodes, agreement, path)
            trials.append(by_nodes[nodes])
        return by_nodes[nodes]

    def faithfulness(t: Trial) -> tuple[float, int]:
        return t.agreement.worst, -len(t.nodes)

    if start is not None and passes(start):
        return start, tuple(trials)
    best = start if start is not None else attempt([])
    base: list[Site] = []
    i = 0
    while i < len(ranked) and not passes(best):
        block = list(ranked[i:i + max(1, i)])
        i += len(block)
        while block and len(float_nodes(base + block, len(base) + len(block))) > max_nodes:
            block.pop()   # the part of the block that fits the budget
        if not block:
            break
        for part in (block, block[:len(block) // 2]):
            if not part:
                continue
            trial = attempt(base + part)
            if faithfulness(trial) > faithfulness(best):
                if passes(trial):   # fewest nodes: bisect the part just added
                    lo, hi = 0, len(part)
                    while hi - lo > 1:
                        mid = (lo + hi) // 2
                        if passes(attempt(base + part[:mid])):
                            hi = mid
                        else:
                            lo = mid
                    part = part[:hi]
                    trial = attempt(base + part)
                base, best = base + part, trial
                break
    passing = [t for t in trials if passes(t)]
    if passing:
        chosen = min(passing, key=lambda t: (len(t.nodes), t.sites))
    else:
        chosen = max(trials, key=faithfulness)
    return chosen, tuple(trials)
