"""`edgert check`: everything `run` does before the first frame, then a summary a person can read."""

from __future__ import annotations

import time

from edgert.config import load_config
from edgert.runtime import Runtime, input_hw


def check(config_path: str) -> str:
    cfg = load_config(config_path)
    kernels = "reference (OpenCV + numpy)"
    if cfg.runtime.kernels == "numba":
        k0 = time.perf_counter()
        from edgert.postprocess import kernels as post
        from edgert.preprocess import fused as pre
        cached = pre.kernels_from_cache() and post.kernels_from_cache()
        kernels = (f"numba, {'loaded from cache' if cached else 'compiled (cold start)'} in "
                   f"{time.perf_counter() - k0:.2f} s")
    t0 = time.perf_counter()
    # A dummy output list: check must not append to the user's jsonl files.
    rt = Runtime.build(cfg, outputs=[], source=_NoSource())
    try:
        t1 = time.perf_counter()
        rt.warm_up(runs=1)
        t2 = time.perf_counter()
        info, m = rt.info, cfg.model
        labels = rt.pipeline.decoder.labels
        hw = input_hw(cfg, info)
        lines = [
            f"config     {cfg.file}",
            f"device_id  {cfg.device_id}",
            f"source     {cfg.source.url} ({cfg.source.kind}, mode {cfg.source.mode})",
            f"model      {info.path} (family {m.family})",
            f"input      {info.input_name} {list(info.input_shape)} {info.input_dtype} → "
            f"{hw[0]}x{hw[1]} {m.input.resize}, {m.input.color}, scale {m.input.scale:g}",
            f"outputs    " + ", ".join(f"{n}{list(s)}" for n, s in
                                       zip(info.output_names, info.output_shapes)),
            f"labels     {len(labels)}: " + ", ".join(labels[:8]) + (" …" if len(labels) > 8 else ""),
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
                for p, base in zip(rt.rungs, rt.ladder.baseline_s))
                + f"; down after {cfg.runtime.ladder.down_after} misses, up after "
                f"{cfg.runtime.ladder.up_after} frames with headroom"
                if len(rt.rungs) > 1 else "none (main model only)"),
            f"rules      {len(cfg.rules)} ({', '.join(r.name for r in cfg.rules) or 'none'}), "
            f"zones {len(cfg.zones)}",
            f"publish    " + (", ".join(o.type for o in cfg.outputs) or "nothing configured"),
            f"kernels    {kernels}",
            f"start-up   {t1 - t0:.2f} s to load the model, {t2 - t1:.2f} s for the first inference",
        ]
        return "\n".join(lines)
    finally:
        rt.close()


class _NoSource:
    """`check` opens no camera: a busy device must not make the config look broken."""

    ended = True

    def start(self) -> None: ...

    def read(self, timeout: float) -> None:
        return None

    def stats(self) -> dict:
        return {}

    def close(self) -> None: ...
