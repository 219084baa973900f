"""The `edgert` verbs: thin over the package, and the one place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import sys
import threading
from typing import Sequence, TextIO

from edgert import __version__
from edgert.errors import EdgertError, UsageError

log = logging.getLogger("edgert")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgert", description="On-device inference with a hard "
                                "per-frame deadline: capture → infer → decide → publish.")
    p.add_argument("--version", action="version", version=f"edgert {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    r = sub.add_parser("run", help="the service: run until stopped or the source ends")
    r.add_argument("config", metavar="CONFIG")
    r.add_argument("--frames", type=_positive_int, metavar="N",
                   help="stop after N decision records")
    r.add_argument("--duration", type=_positive_float, metavar="S",
                   help="stop S seconds after becoming ready")

    c = sub.add_parser("check", help="validate the config, load the model, print a summary")
    c.add_argument("config", metavar="CONFIG")

    b = sub.add_parser("bench", help="per-stage latency, loop overhead vs bare onnxruntime")
    b.add_argument("config", metavar="CONFIG")
    b.add_argument("--frames", type=_positive_int, default=300, metavar="N")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    b.add_argument("--compare", choices=("naive", "ultralytics"), metavar="{naive,ultralytics}",
                   help="also run edgert, the hand-written loop (and Ultralytics' predict loop) "
                        "each in its own process: fps, CPU per frame, peak RSS")
    b.add_argument("--decode-ahead", action="store_true",
                   help="with --compare: also edgert with decoding on a thread ahead of the loop")
    b.add_argument("--rounds", type=_positive_int, default=2, metavar="N",
                   help="with --compare: alternating rounds per contender (default 2)")

    rp = sub.add_parser("replay", help="recorded video through the same loop: decisions, "
                        "report, plots; --expect compares with a golden run")
    rp.add_argument("target", metavar="VIDEO_OR_FOLDER")
    rp.add_argument("--config", required=True, metavar="CONFIG")
    rp.add_argument("--out", required=True, metavar="DIR")
    rp.add_argument("--realtime", action="store_true",
                    help="at the recording's pace, the budget enforced as on the box")
    rp.add_argument("--annotate", action="store_true", help="also write DIR/annotated.mp4")
    rp.add_argument("--expect", metavar="GOLDEN.jsonl",
                    help="compare decisions with an earlier replay's; exit 3 if they differ")
    rp.add_argument("--source", metavar="ID",
                    help="with [[sources]]: the camera the recording is from (its rules apply)")
    rp.add_argument("--truth", metavar="LABELS",
                    help="COCO JSON, a folder of YOLO .txt, or truth JSON lines: adds "
                         "precision, recall and mAP to the report")

    q = sub.add_parser("quantize", help="static INT8 (QDQ) calibrated on real frames, with a "
                       "FP32-vs-INT8 speed and agreement report and a verdict")
    q.add_argument("model", metavar="MODEL.onnx")
    q.add_argument("--calib", required=True, metavar="DIR_OR_VIDEO",
                   help="a folder of images, a video or a folder of videos: calibration "
                        "(and held-out) frames")
    q.add_argument("--out", required=True, metavar="MODEL_INT8.onnx")
    q.add_argument("--config", metavar="DEVICE.toml",
                   help="take model.input, family, labels and thresholds from a device config")
    q.add_argument("--family", help="the model family when no config or model.toml says it")
    q.add_argument("--frames", type=_positive_int, default=64, metavar="N",
                   help="calibration frames (default 64)")
    q.add_argument("--agreement", type=_fraction, default=0.95, metavar="F",
                   help="detections INT8 must keep, both directions (default 0.95)")
    q.add_argument("--eval", action="append", default=[], metavar="DIR_OR_VIDEO",
                   help="held-out frames for agreement (repeatable); else spare --calib frames")
    q.add_argument("--method", choices=("minmax", "percentile", "entropy"), default="minmax",
                   help="calibration method (default minmax)")
    return p


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError("must be at most 1")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def _run(args: argparse.Namespace) -> int:
    from edgert.config import load_config
    from edgert.runtime import Runtime
    from edgert.service.signals import on_sighup, stop_on_signals
    from edgert.service.watch import ServiceWatch

    cfg = load_config(args.config)
    if not cfg.outputs:
        log.warning("%s has no [[outputs]]: every decision is made and thrown away (add "
                    "[[outputs]] type = \"stdout\" to see them)", cfg.file)
    stop = threading.Event()
    watch = ServiceWatch.from_env(cfg, args.config)
    try:
        with stop_on_signals(stop), on_sighup(watch.reloader and watch.reloader.requested):
            runtime = Runtime.build(cfg, watch=watch)
            summary = runtime.run(stop, max_records=args.frames, duration_s=args.duration)
    finally:
        watch.close()
    log.info("summary: %s", json.dumps(summary.as_dict(), separators=(",", ":")))
    return 0


def _check(args: argparse.Namespace) -> int:
    from edgert.check import check
    print(check(args.config))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from edgert.bench import bench, format_report
    report = bench(args.config, args.frames, args.compare, args.decode_ahead, args.rounds)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgert.replay import ReplayArgs, replay
    from edgert.service.signals import stop_on_signals

    opt = lambda v: Path(v) if v else None   # noqa: E731
    stop = threading.Event()
    with stop_on_signals(stop):
        return replay(ReplayArgs(Path(args.target), Path(args.config), Path(args.out),
                                 args.realtime, args.annotate, opt(args.expect),
                                 opt(args.truth), args.source), stop)


def _quantize(args: argparse.Namespace) -> int:
    from pathlib import Path

    try:
        import onnx  # noqa: F401  (quantization edits graphs; the runtime itself never needs it)
    except ImportError:
        raise UsageError("edgert quantize needs the onnx package; install it with "
                         "pip install 'edgert[quantize]'") from None
    from edgert.quantize import format_report, run_quantize
    report = run_quantize(Path(args.model), Path(args.calib), Path(args.out),
                          config=Path(args.config) if args.config else None, family=args.family,
                          frames=args.frames, threshold=args.agreement,
                          eval_sources=tuple(Path(p) for p in args.eval), method=args.method)
    print(format_report(report))
    return 0


def _reader_left(stream: TextIO) -> bool:
    """True if nobody reads `stream` any more: its pipe or socket reports an error or hang-up."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError):   # no file descriptor (a test's StringIO), or already closed
        return False


def main(argv: Sequence[str] | None = None) -> int:
    # OpenCV and FFmpeg warn on every failed reopen of a live source; edgert reports outages
    # itself, once. A user's own setting wins. Must happen before cv2 is imported.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")   # AV_LOG_FATAL
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="edgert: %(levelname)s: %(message)s")
    verbs = {"run": _run, "check": _check, "bench": _bench, "quantize": _quantize,
             "replay": _replay}
    try:
        status = verbs[args.verb](args)
        sys.stdout.flush()   # a closed pipe must surface here, not in the interpreter's exit
        return status
    except BrokenPipeError:
        if not _reader_left(sys.stdout):
            raise   # a pipe or socket of edgert's own broke (an output): not a reader leaving
        # The reader left (`edgert check … | head -1`): nothing more to say, and no traceback.
        # stdout goes to devnull so the flush at exit cannot raise again, as Python's docs on
        # SIGPIPE recommend.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UsageError as e:
        print(f"edgert: {e}", file=sys.stderr)
        return 2
    except EdgertError as e:
        print(f"edgert: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:   # a second Ctrl-C during start-up
        return 0


if __name__ == "__main__":
    sys.exit(main())
