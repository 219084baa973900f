"""The bench report as text: ratios first (edgert against the floor and its peers), then the
absolute figures they come from."""

from __future__ import annotations

from typing import Any


def _ms(d: dict[str, float]) -> str:
    return f"p50 {d['p50']:7.3f} ms   p99 {d['p99']:7.3f} ms"


def _ratios(r: dict[str, Any]) -> list[str]:
    lines = ["ratios (edgert / other; fps above 1 and cpu, rss below 1 favour edgert)",
             f"  step / bare session.run      {r['step_vs_bare_run']:.3f}x   (median, steady state)",
             f"  frame / floor                {r['frame_vs_floor']:.3f}x   (floor: same capture + "
             "bare run)",
             f"  cpu per frame / floor cpu    {r['cpu_vs_floor']:.3f}x"]
    nv = r.get("naive")
    if nv:
        lines.append(f"  vs naive loop, in process    fps {nv['fps_ratio']:.3f}x   cpu "
                     f"{nv['cpu_ratio']:.3f}x")
    cmp = r.get("compare")
    if cmp:
        for k, q in cmp["ratios"].items():
            lines.append(f"  vs {k + ', own process':<26} fps {q['fps']:.3f}x   cpu "
                         f"{q['cpu_ms_per_frame']:.3f}x   peak rss {q['peak_rss']:.3f}x")
    return lines


def format_report(r: dict[str, Any]) -> str:
    lines = [f"edgert bench: {r['frames']} frames of {r['model']} on {', '.join(r['providers'])}"]
    lines += _ratios(r)
    lines.append("absolutes, in process, interleaved frame by frame")
    lines += [
        f"  throughput          {r['throughput_fps']:.1f} frames/s   (wall per decided frame, "
        "capture and decode included)",
        f"  frame               {_ms(r['frame_ms'])}",
        f"  capture             {_ms(r['capture_ms'])}",
    ]
    for k, v in r["stages_ms"].items():
        lines.append(f"  stage {k:<12} {_ms(v)}")
    lines += [
        f"  session.run in loop {_ms(r['session_run_in_loop_ms'])}",
        f"  bare session.run    {_ms(r['bare_session_run_ms'])}   (same session, same tensor)",
        f"  loop overhead       {_ms(r['loop_overhead_ms'])}   (the step but session.run)",
        f"  overhead share      p50 {r['loop_overhead_share']['p50']:.1%}   p99 "
        f"{r['loop_overhead_share']['p99']:.1%}   of median inference",
        f"  in-loop / bare run  {r['in_loop_vs_bare_run']:.3f}x",
        f"  cpu per frame       loop {r['cpu_ms_per_frame']['loop']:.2f} ms (capture "
        f"{r['cpu_ms_per_frame']['capture']:.2f}), floor {r['cpu_ms_per_frame']['floor']:.2f} ms "
        f"(bare run {r['cpu_ms_per_frame']['bare_run']:.2f})",
        f"  max rss             {r['memory_mb']['max_rss']:.0f} MB (this process: all three loops)",
    ]
    nv = r.get("naive")
    lines.append(f"  naive loop          {nv['throughput_fps']:.1f} frames/s, frame "
                 f"{_ms(nv['frame_ms'])}, capture p50 {nv['capture_ms']['p50']:.3f} ms, cpu "
                 f"{nv['cpu_ms_per_frame']:.2f} ms" if nv else
                 "  naive loop          not run (it reads a video file with a yolov8/yolox model)")
    cmp = r.get("compare")
    if cmp:
        lines.append(f"absolutes, each contender in its own process ({cmp['rounds']} rounds of "
                     f"{cmp['frames']} frames, medians)")
        for k, c in cmp["contenders"].items():
            lines.append(f"  {k:<14} {c['fps']:6.1f} frames/s   cpu {c['cpu_ms_per_frame']:6.2f} "
                         f"ms/frame   peak rss {c['peak_rss_mb']:5.0f} MB   start-up "
                         f"{c['startup_s']:.1f} s")
            lines += [f"  {'':<14} {note}: {text}" for note, text in c["notes"].items()]
    return "\n".join(lines)
