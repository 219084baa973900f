"""Pick the decoder for `model.family`, choosing outputs by shape (export names are unreliable)."""

from __future__ import annotations

from typing import Callable, TypeVar

from edgert.config.types import ModelConfig
from edgert.infer.model import ModelInfo
from edgert.postprocess.base import Decoder, no_output, resolve_labels
from edgert.postprocess.classify import ClassifyDecoder
from edgert.postprocess.ssd import SsdDecoder
from edgert.postprocess.user import DecodeContext, UserDecoder, load_callable
from edgert.postprocess.yolo import EndToEndDecoder, YoloV5Decoder, YoloV8Decoder
from edgert.postprocess.yolox import YoloXDecoder, grid

Shape = tuple[int | str | None, ...]
T = TypeVar("T")


def _ints(shape: Shape) -> tuple[int, ...] | None:
    return tuple(shape) if all(isinstance(d, int) for d in shape) else None  # type: ignore[return-value]


def _end2end(info: ModelInfo) -> int | None:
    """An Ultralytics end-to-end export: [1, K, 6] rows, or metadata end2end=True."""
    for i, shp in enumerate(info.output_shapes):
        dims = _ints(shp[1:])
        if len(shp) == 3 and dims and dims[1] == 6 and (
                info.metadata.get("end2end", "").lower() == "true" or dims[0] <= 1000):
            return i
    return None


def _first(shapes: tuple[Shape, ...],
           fits: Callable[[tuple[int, ...]], bool]) -> tuple[int, tuple[int, ...]] | None:
    """The first [1, A, B] output whose (A, B) fits: (its index, (A, B))."""
    for i, shp in enumerate(shapes):
        dims = _ints(shp[1:])
        if len(shp) == 3 and dims and fits(dims):
            return i, dims
    return None


def _yolov8(shapes: tuple[Shape, ...]) -> tuple[int, tuple[int, ...]] | None:
    """[1, 4+classes, anchors]: fewer rows than anchors."""
    return _first(shapes, lambda d: 5 <= d[0] < d[1])


def _rows(shapes: tuple[Shape, ...]) -> tuple[int, tuple[int, ...]] | None:
    """[1, anchors, 5+classes] (YOLOv5, YOLOX): one row per anchor."""
    return _first(shapes, lambda d: 6 <= d[1] < d[0])


def _ssd(shapes: tuple[Shape, ...]) -> tuple[tuple[int, tuple[int, ...]], int] | None:
    """Scores [1, N, classes+1] and boxes [1, N, 4]: ((scores index, dims), boxes index)."""
    boxes = scores = None
    for i, shp in enumerate(shapes):
        dims = _ints(shp[1:])
        if len(shp) == 3 and dims and dims[1] == 4 and boxes is None:
            boxes = (i, dims[0])
        elif len(shp) == 3 and dims and dims[1] >= 2:
            scores = (i, dims)
    if boxes is None or scores is None or boxes[1] != scores[1][0]:
        return None
    return scores, boxes[0]


def _classify(shapes: tuple[Shape, ...]) -> tuple[int, int] | None:
    """[N, classes] (or [N, classes, 1, 1]) with N the batch, 1 or dynamic: (index, classes).
    Without the batch check a [1600, 80] detector head passed as 80 classes and gave nothing."""
    for i, shp in enumerate(shapes):
        if len(shp) < 2 or shp[0] not in (1, None):
            continue
        dims = [d for d in shp[1:] if d != 1]
        if len(dims) == 1 and isinstance(dims[0], int) and dims[0] >= 2:
            return i, dims[0]
    return None


def fitting(info: ModelInfo) -> list[str]:
    """The built-in families whose outputs this model has, for the error that names another."""
    shapes, fits = info.output_shapes, []
    if _end2end(info) is not None or _yolov8(shapes):
        fits.append("yolov8")
    if _rows(shapes):
        fits += ["yolov5", "yolox"]
    if _ssd(shapes):
        fits.append("ssd")
    if _classify(shapes):
        fits.append("classify")
    return fits


def _need(found: T | None, info: ModelInfo, family: str, wanted: str) -> T:
    """What a family's finder found, or the error naming the outputs and the family they fit."""
    if found is None:
        raise no_output(info, family, wanted, fitting(info))
    return found


def make_decoder(cfg: ModelConfig, info: ModelInfo, input_hw: tuple[int, int],
                 kernels: str = "reference") -> Decoder:
    """`kernels="numba"` picks the compiled decoder where one exists (YOLOv8 today)."""
    fam, shapes = cfg.family, info.output_shapes
    if fam == "yolov8":
        e2e = _end2end(info)
        if e2e is not None:
            n = len(cfg.labels or info.names or ()) or 80
            return EndToEndDecoder(resolve_labels(cfg, info, n), e2e, cfg.conf, cfg.max_det)
        i, dims = _need(_yolov8(shapes), info, fam, "an output shaped [1, 4+classes, anchors]")
        labels = resolve_labels(cfg, info, dims[0] - 4)
        if kernels == "numba":
            from edgert.postprocess.kernels import YoloV8Kernel
            kernel = YoloV8Kernel(labels, i, cfg.conf, cfg.iou, cfg.max_det, dims[1])
            kernel.warm_up(dims[0] - 4)
            return kernel
        return YoloV8Decoder(labels, i, cfg.conf, cfg.iou, cfg.max_det)
    if fam in ("yolov5", "yolox"):
        i, dims = _need(_rows(shapes), info, fam, "an output shaped [1, anchors, 5+classes]")
        labels = resolve_labels(cfg, info, dims[1] - 5)
        if fam == "yolov5":
            return YoloV5Decoder(labels, i, cfg.conf, cfg.iou, cfg.max_det)
        anchors = grid(input_hw)[0].shape[0]
        if anchors != dims[0]:
            raise no_output(info, fam, f"{anchors} anchors for a {input_hw[0]}x{input_hw[1]} "
                            "input at strides 8/16/32", fitting(info))
        return YoloXDecoder(labels, i, cfg.conf, cfg.iou, cfg.max_det, input_hw)
    if fam == "ssd":
        (si, dims), bi = _need(_ssd(shapes), info, fam,
                               "two outputs, scores [1, N, classes+1] and boxes [1, N, 4]")
        labels = resolve_labels(cfg, info, dims[1] - 1)
        return SsdDecoder(labels, si, bi, cfg.conf, cfg.iou, cfg.max_det, input_hw)
    if fam == "classify":
        i, classes = _need(_classify(shapes), info, fam,
                           "an output shaped [N, classes] with N the batch (1 or dynamic)")
        return ClassifyDecoder(resolve_labels(cfg, info, classes), i, cfg.conf, cfg.top_k,
                               info.output_names[i])
    # Anything else was checked at config load to be an importable "module:function".
    labels = cfg.labels or info.names or ()
    ctx = DecodeContext(input_hw, info.output_names, labels, cfg.conf, dict(info.metadata))
    named_by = ("model.labels" if cfg.labels else "the model's metadata 'names'" if info.names
                else "")
    return UserDecoder(load_callable(fam), ctx, cfg.iou, cfg.max_det, fam, named_by)
