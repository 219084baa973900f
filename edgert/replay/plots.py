"""The replay's pictures (PNG via matplotlib, without a display): where the time went, when
the budget was missed, and what the rules decided over the recording."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from edgert.records import STAGES, Decision


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")   # a board or CI has no display
    import matplotlib.pyplot as plt
    return plt


def draw(decisions: Sequence[Decision], budget_ms: float, folder: Path, title: str) -> list[Path]:
    """Three PNGs in `folder`; returns their paths."""
    plt = _pyplot()
    ok = [d for d in decisions if d.status == "ok"]
    paths = [folder / "latency_hist.png", folder / "latency_time.png", folder / "actions.png"]

    stages = (*STAGES, "total")
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    for ax, stage in zip(axes.flat, stages):
        ax.hist([d.timing.latency_ms.get(stage, 0.0) for d in ok], bins=40, color="#4477aa")
        ax.set_title(stage)
        ax.set_xlabel("ms")
        if stage == "total":
            ax.axvline(budget_ms, color="red", linestyle="--", label="budget")
            ax.legend()
    fig.suptitle(f"{title}: per-stage latency ({len(ok)} ok frames)")
    fig.tight_layout()
    fig.savefig(paths[0], dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(12, 4))
    xs = [d.verdict.frame_id for d in decisions]
    ax.plot(xs, [d.timing.latency_ms.get("total", 0.0) for d in decisions], lw=0.8,
            label="total latency")
    ax.axhline(budget_ms, color="red", linestyle="--", label=f"budget {budget_ms:g} ms")
    missed = [d for d in decisions
              if d.status != "ok" or d.timing.latency_ms.get("total", 0.0) > budget_ms]
    if missed:
        ax.scatter([d.verdict.frame_id for d in missed],
                   [d.timing.latency_ms.get("total", 0.0) for d in missed], color="red",
                   marker="x", s=20, zorder=3, label=f"misses ({len(missed)})")
    ax.set_xlabel("frame")
    ax.set_ylabel("ms")
    ax.set_title(f"{title}: latency over time")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=80)
    plt.close(fig)

    actions = sorted({d.action for d in decisions})
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.4 * len(actions)))
    row = {a: i for i, a in enumerate(actions)}
    ax.scatter(xs, [row[d.action] for d in decisions], marker="|", s=80,
               c=["#228833" if d.status == "ok" else "#cc3311" for d in decisions])
    ax.set_yticks(range(len(actions)), actions)
    ax.set_ylim(-0.5, len(actions) - 0.5)
    ax.set_xlabel("frame")
    ax.set_title(f"{title}: action per frame (red: not ok)")
    fig.tight_layout()
    fig.savefig(paths[2], dpi=80)
    plt.close(fig)
    return paths
