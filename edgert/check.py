"""`edgert check`: everything `run` does before the first frame, then a summary a person can read."""

from __future__ import annotations

import time

import numpy as np

from edgert.clock import LIVE
from edgert.config import load_config
from edgert.config.types import Config
from edgert.publish.probe import probe_outputs
from edgert.wiring import build_rungs, expected_frame_hw, input_plan, warm_up


def check(config_path: str) -> str:
    cfg = load_config(config_path)
    kernels = "reference (OpenCV + numpy)"
    t0 = time.perf_counter()
    if cfg.runtime.kernels == "numba":
        from edgert.postprocess import kernels as post
        from edgert.preprocess import fused as pre
    # No source: a busy camera must not make the config look broken. Outputs are probed, not
    # opened (publish/probe.py): nothing is written. Kernels compile (or load) here.
    rungs, info = build_rungs(cfg, LIVE)
    t1 = time.perf_counter()
    if cfg.runtime.kernels == "numba":
        cached = pre.kernels_from_cache() and post.kernels_from_cache()
        kernels = f"numba, {'loaded from cache' if cached else 'compiled (cold start)'}"
    baseline = warm_up(cfg, rungs, info,
                       np.full((*expected_frame_hw(cfg), 3), 114, np.uint8), LIVE, runs=1)
    t2 = time.perf_counter()
    probes = probe_outputs(cfg)
    m = cfg.model
    labels = rungs[0].decoder.labels
    plan = input_plan(cfg, info)
    lines = [
        f"config     {cfg.file}",
        f"device_id  {cfg.device_id}",
        *_sources(cfg, rungs[0].batch_note),
        f"model      {info.path} (family {m.family})",
        f"input      {info.input_name} {list(info.input_shape)} {info.input_dtype}"
        + (f" (rewritten: the file declares {list(info.declared_shape)})"
           if info.declared_shape else "") + f" → {plan.describe()}",
        f"           ({plan.origin})",
        f"outputs    " + ", ".join(f"{n}{list(s)}" for n, s in
                                   zip(info.output_names, info.output_shapes)),
        f"labels     {_labels(labels, m.labels is None and info.names is None)}",
        f"providers  requested {', '.join(cfg.runtime.providers)}; bound "
        f"{', '.join(info.providers)}"
        + (f"; not bound: {', '.join(info.not_bound)} (degraded, policy "
           f"{cfg.runtime.provider_policy})" if info.degraded else ""),
        f"budget     {cfg.runtime.budget_ms:g} ms, on overrun {cfg.runtime.on_overrun} "
        f"(safe action {cfg.fail_safe.action!r}"
        + (f", held up to {cfg.runtime.hold_last_max_age_ms:g} ms"
           if cfg.runtime.on_overrun == "hold_last" else "") + ")",
        f"ladder     " + (" → ".join(
            f"{p.name} {'x'.join(map(str, p.preprocess.input_hw))} ({base * 1e3:.1f} ms)"
            for p, base in zip(rungs, baseline))
            + f"; down after {cfg.runtime.ladder.down_after} misses, up after "
            f"{cfg.runtime.ladder.up_after} frames with headroom"
            if len(rungs) > 1 else "none (main model only)"),
        *_sequence(rungs[0]),
        f"motion     " + (f"gated: grid {list(cfg.motion.grid)}, {cfg.motion.pixel_threshold:g} "
                          f"levels on {cfg.motion.area_threshold:g} of the blocks, inferred at "
                          f"least every {cfg.motion.force_every_s:g} s"
                          + (", zones only" if cfg.motion.zones_only else "")
                          if cfg.motion.enabled else "off (every frame inferred)"),
        f"rules      {len(cfg.rules)} ({', '.join(r.name for r in cfg.rules) or 'none'}), "
        f"zones {len(cfg.zones)}",
        f"publish    " + (", ".join(o.type for o in cfg.outputs) or "nothing configured "
                             "(warning: every decision is thrown away)"),
        *(f"  {p}" for p in probes),
        *_queues(cfg),
        f"kernels    {kernels}",
        f"start-up   {t1 - t0:.2f} s to load the model, {t2 - t1:.2f} s for the first inference",
    ]
    return "\n".join(lines)


def _sequence(main) -> list[str]:  # noqa: ANN001 - the main Pipeline
    """What runs after the main model: secondary models, escalation, the user's stage."""
    out = []
    for sec in main.secondaries:
        c = sec.cfg
        out.append(f"secondary  {c.name}: {c.model.path.name} ({c.model.family}) on "
                   f"{', '.join(c.on) or 'every label'}, up to {c.max_crops} crops, "
                   + (f"batched by {sec.batch}" if sec.batch > 1 else "one per run")
                   + f", input {'x'.join(map(str, sec.crops.input_hw))}")
    esc = main.escalation
    if esc is not None:
        out.append(f"escalate   {esc.cfg.model.path.name} "
                   f"{'x'.join(map(str, esc.heavy.preprocess.input_hw))} when "
                   f"{', '.join(esc.cfg.on) or 'a detection'} scores in "
                   f"[{esc.lo:g}, {esc.hi:g}) and it fits ({esc.seen_s * 1e3:.1f} ms at warm-up)")
    if main.user_stage is not None:
        st = main.user_stage
        out.append(f"stage      {st.spec}, sessions: {', '.join(st.sessions) or 'none'}")
    return out


def _labels(labels: tuple[str, ...], unnamed: bool) -> str:
    """The labels, or plainly that there are none and what records say instead."""
    how = ("model.labels is not set and the model's metadata has no 'names'; set model.labels "
           "to a text file with one label per line")
    if not labels:
        return f"none: records name classes class_0, class_1, … by class id ({how})"
    shown = ", ".join(labels[:8]) + (" …" if len(labels) > 8 else "")
    return f"{len(labels)}, unnamed: {shown} ({how})" if unnamed else f"{len(labels)}: {shown}"


def _queues(cfg) -> list[str]:  # noqa: ANN001
    """Each MQTT output's disk queue: what it holds, and whether it is intact."""
    if not any(o.mqtt for o in cfg.outputs):
        return []
    from edgert.publish.mqtt_store import describe   # loads sqlite3
    return [f"queue      {describe(o.mqtt.queue_path)}" for o in cfg.outputs if o.mqtt]


def _sources(cfg: Config, batch_note: str) -> list[str]:
    """One line a source; with [[sources]], each with its id, and how batching runs."""
    if not cfg.named_sources:
        src = cfg.source
        return [f"source     {src.url} ({src.kind}, mode {src.mode})"]
    lines = [f"source     {s.id}: {s.url} ({s.kind}, mode {s.mode})"
             + (f", fail_safe {s.fail_safe!r}" if s.fail_safe else "") for s in cfg.sources]
    rt = cfg.runtime
    lines.append(f"batching   {rt.batching}" + (f": {batch_note or 'frames run singly'}"
                                                if rt.batching != "off" else ""))
    return lines
