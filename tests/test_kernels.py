"""The numba kernels against their references: fused vs OpenCV/numpy preprocessing, kernel vs
OpenCV NMS and the numpy YOLOv8 decoder, on seeded random inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgert.config.types import InputConfig
from edgert.frame import Frame
from edgert.postprocess import kernels
from edgert.postprocess.families import YoloV8Decoder
from edgert.postprocess.kernels import YoloV8Kernel, nms_class_aware_numba
from edgert.postprocess.nms import nms_class_aware
from edgert.preprocess import fused
from edgert.preprocess.fused import FusedPreprocessor
from edgert.preprocess.reference import ReferencePreprocessor
from edgert.preprocess.transform import plan_transform

IMAGENET = dict(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def frame(h: int, w: int, seed: int = 0) -> Frame:
    rng = np.random.default_rng(seed)
    # Smooth gradients plus noise: interpolation errors show, and every level occurs.
    yy, xx = np.mgrid[0:h, 0:w]
    base = (xx * 255 // max(w - 1, 1) + yy * 97 // max(h - 1, 1))[..., None] + [0, 60, 120]
    noise = rng.integers(-40, 41, (h, w, 3))
    return Frame(0, np.clip(base % 256 + noise, 0, 255).astype(np.uint8), 0.0, 0.0)


def levels(tensor: np.ndarray, cfg: InputConfig, dtype: np.dtype) -> np.ndarray:
    """Grey level behind each tensor value, found in the reference's own level → value table
    (a 1×256 ramp through the reference at its own size). Fails if a value is not in it."""
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (1, 256, 3)).copy()
    same_size = dataclasses.replace(cfg, resize="stretch")
    table, _ = ReferencePreprocessor(same_size, (1, 256), dtype)(Frame(0, ramp, 0.0, 0.0))
    out = np.empty(tensor.shape[1:], np.int64)
    for p in range(3):
        lut = table[0, p, 0].astype(np.float64)
        order = np.argsort(lut, kind="stable")
        vals = tensor[0, p].astype(np.float64)
        pos = np.clip(np.searchsorted(lut[order], vals), 0, 255)
        assert np.array_equal(lut[order][pos], vals), "a value outside the reference's table"
        out[p] = order[pos]
    return out


def assert_twins(cfg: InputConfig, input_hw: tuple[int, int], dtype, f: Frame) -> None:
    ref_tensor, ref_t = ReferencePreprocessor(cfg, input_hw, dtype)(f)
    tensor, t = FusedPreprocessor(cfg, input_hw, dtype)(f)
    assert t == ref_t
    assert tensor.shape == ref_tensor.shape and tensor.dtype == ref_tensor.dtype
    diff = np.abs(levels(tensor, cfg, dtype) - levels(ref_tensor, cfg, dtype))
    assert diff.max() <= 1, f"max {diff.max()} grey levels"


FRAME_SIZES = [(1080, 1920), (360, 640), (479, 641), (100, 50)]
GEOMETRY = [dict(resize="letterbox"), dict(resize="letterbox", align="top_left"),
            dict(resize="stretch"), dict(resize="center_crop")]


@pytest.mark.parametrize("hw", FRAME_SIZES)
@pytest.mark.parametrize("geometry", GEOMETRY, ids=lambda g: "-".join(g.values()))
@pytest.mark.parametrize("input_hw", [(640, 640), (320, 416)])
def test_fused_matches_reference_geometry(hw, geometry, input_hw):
    assert_twins(InputConfig(**geometry, color="rgb", scale=1 / 255), input_hw, np.float32,
                 frame(*hw))


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
@pytest.mark.parametrize("hw", [(640, 640), (479, 641)], ids=["exact-2x", "general"])
@pytest.mark.parametrize("twin", [FusedPreprocessor, ReferencePreprocessor],
                         ids=["fused", "reference"])
def test_channels_last_holds_the_values_of_channels_first(dtype, hw, twin):
    """layout = "nhwc" writes the very values of "nchw", channel by channel, into (1, H, W, 3)."""
    cfg = InputConfig(resize="stretch", color="rgb", **IMAGENET)
    f = frame(*hw, seed=2)
    first, _ = twin(cfg, (320, 320), dtype)(f)
    last, _ = twin(dataclasses.replace(cfg, layout="nhwc"), (320, 320), dtype)(f)
    assert last.shape == (1, 320, 320, 3)
    np.testing.assert_array_equal(last.transpose(0, 3, 1, 2), first)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
@pytest.mark.parametrize("color", ["bgr", "rgb"])
@pytest.mark.parametrize("norm", [dict(), dict(scale=1 / 255), IMAGENET],
                         ids=["identity", "scale", "mean-std"])
@pytest.mark.parametrize("hw", [(479, 641), (100, 50)])
def test_fused_matches_reference_colour_and_dtype(dtype, color, norm, hw):
    cfg = InputConfig(resize="letterbox", color=color, pad_value=114, **norm)
    assert_twins(cfg, (320, 320), dtype, frame(*hw, seed=1))


def test_fused_exact_on_integer_ratio():
    """1920×1080 → 640×360 is a 3× step: OpenCV's bilinear weights are (1, 0), so exact."""
    cfg = InputConfig(resize="letterbox")
    f = frame(1080, 1920)
    a, _ = ReferencePreprocessor(cfg, (640, 640), np.float32)(f)
    b, _ = FusedPreprocessor(cfg, (640, 640), np.float32)(f)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
@pytest.mark.parametrize("norm", [dict(), dict(scale=1 / 255), IMAGENET],
                         ids=["identity", "scale", "mean-std"])
@pytest.mark.parametrize("hw, input_hw, geometry", [
    ((360, 640), (320, 320), dict(resize="letterbox", color="rgb")),
    ((720, 1280), (640, 640), dict(resize="letterbox", align="top_left")),
    ((640, 640), (320, 320), dict(resize="stretch", color="rgb")),
])
def test_fused_halving_path_is_exact(dtype, norm, hw, input_hw, geometry):
    """Exactly half size takes the 2×2-mean kernel; it must equal OpenCV + numpy bit for bit."""
    cfg = InputConfig(pad_value=114, **geometry, **norm)
    f = frame(*hw, seed=2)
    pre = FusedPreprocessor(cfg, input_hw, dtype)
    b, _ = pre(f)
    assert pre._plan.halve
    a, _ = ReferencePreprocessor(cfg, input_hw, dtype)(f)
    assert a.dtype == b.dtype and np.array_equal(a, b)


def test_fused_reuses_its_tensor_and_follows_frame_size_changes():
    cfg = InputConfig(resize="letterbox", color="rgb", **IMAGENET)
    pre = FusedPreprocessor(cfg, (320, 320), np.float32)
    f1, f2 = frame(479, 641), frame(1080, 1920, seed=3)
    a, t1 = pre(f1)
    b, _ = pre(f1)
    assert a is b is pre.tensor
    c, t2 = pre(f2)                      # new size: new plan and padding, same tensor
    assert c is a and t2 != t1
    ref, _ = ReferencePreprocessor(cfg, (320, 320), np.float32)(f2)
    assert np.abs(levels(c, cfg, np.float32) - levels(ref, cfg, np.float32)).max() <= 1


def test_fused_accepts_a_non_contiguous_frame():
    cfg = InputConfig(resize="stretch")
    big = frame(480, 1280)
    f = Frame(0, big.image[:, ::2], 0.0, 0.0)
    assert_twins(cfg, (320, 320), np.float32, f)


def test_fused_reads_read_only_frames():
    """Sources hand out read-only images from a ring of buffers."""
    f = frame(360, 640)
    f.image.flags.writeable = False
    assert_twins(InputConfig(resize="letterbox"), (320, 320), np.float32, f)


def test_fused_rejects_what_it_cannot_write():
    with pytest.raises(ValueError, match="float32, float16 or uint8"):
        FusedPreprocessor(InputConfig(), (64, 64), np.int8)
    pre = FusedPreprocessor(InputConfig(), (64, 64), np.float32)
    with pytest.raises(ValueError, match=r"expected \(H, W, 3\) uint8"):
        pre(Frame(0, np.zeros((10, 10), np.uint8), 0.0, 0.0))


def test_kernels_compiled_when_the_preprocessor_is_built_not_on_a_frame():
    pre = FusedPreprocessor(InputConfig(), (64, 64), np.float16)
    resize, halve = fused.kernels(np.uint16)      # float16 is written as its uint16 bits
    assert pre._resize is resize and pre._halve is halve
    assert len(resize.signatures) == len(halve.signatures) == 1   # only what this model needs
    pre.warm_up((48, 64))
    FusedPreprocessor(InputConfig(), (64, 64), np.float32).warm_up((128, 128))
    assert len(resize.signatures) == len(halve.signatures) == 1   # no compile on a frame
    assert isinstance(fused.kernels_from_cache(), bool)
    assert isinstance(kernels.kernels_from_cache(), bool)


# --- NMS ----------------------------------------------------------------------------------------


def random_boxes(rng: np.random.Generator, n: int, classes: int, size: float = 640.0,
                 clusters: int = 20, score_step: float | None = None):
    """Boxes in clusters (heavy overlap), inside [0, size] so OpenCV's class offsets hold."""
    centres = rng.uniform(0.1 * size, 0.9 * size, (clusters, 2))
    c = centres[rng.integers(0, clusters, n)] + rng.normal(0, 0.03 * size, (n, 2))
    wh = rng.uniform(0.02 * size, 0.25 * size, (n, 2))
    x1y1 = np.clip(c - wh / 2, 0, size)
    x2y2 = np.clip(c + wh / 2, x1y1 + 1, size + 1)
    boxes = np.concatenate([x1y1, x2y2], axis=1).astype(np.float32)
    scores = rng.uniform(0.05, 1.0, n).astype(np.float32)
    if score_step:
        scores = (np.round(scores / score_step) * score_step).astype(np.float32)   # many ties
    return boxes, scores, rng.integers(0, classes, n).astype(np.int32)


@pytest.mark.parametrize("classes", [1, 2, 5, 80])
@pytest.mark.parametrize("iou", [0.3, 0.45, 0.7])
def test_nms_matches_opencv(classes, iou):
    rng = np.random.default_rng(classes * 1000 + int(iou * 100))
    for trial in range(12):
        n = int(rng.integers(1, 1600)) if trial else 1500
        boxes, scores, cls = random_boxes(rng, n, classes, clusters=int(rng.integers(1, 40)),
                                          score_step=0.01 if trial % 3 == 0 else None)
        want = nms_class_aware(boxes, scores, cls, iou, max_det=n)
        got = nms_class_aware_numba(boxes, scores, cls, iou, max_det=n)
        np.testing.assert_array_equal(got, want)       # same boxes, same (score) order


def test_nms_max_det_caps_kept_boxes():
    """Both suppress over all candidates, then keep the first max_det (OpenCV's own top_k would
    cut the candidates before suppression; the reference no longer passes it)."""
    rng = np.random.default_rng(7)
    for max_det in (1, 10, 100):
        boxes, scores, cls = random_boxes(rng, 1200, 3, clusters=30)
        full = nms_class_aware(boxes, scores, cls, 0.45, max_det=len(scores))
        np.testing.assert_array_equal(nms_class_aware_numba(boxes, scores, cls, 0.45, max_det),
                                      full[:max_det])
        np.testing.assert_array_equal(nms_class_aware(boxes, scores, cls, 0.45, max_det),
                                      full[:max_det])
    # A ≻ B overlap, C apart: a top_k=2 cut before suppression would see only A and B.
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms_class_aware_numba(boxes, scores, np.zeros(3, np.int32), 0.5, 2).tolist() == [0, 2]
    assert nms_class_aware(boxes, scores, np.zeros(3, np.int32), 0.5, 2).tolist() == [0, 2]


def test_nms_edges_kept_apart_by_class_and_area():
    """Where OpenCV's class-offset trick and its 0/0 IoU go wrong, the kernel does not."""
    # class 0 near the far corner, class 1 partly off the image at the near corner: OpenCV
    # shifts class 1 by max coordinate + 1 right onto the class-0 box and suppresses it.
    boxes = np.array([[600, 600, 640, 640], [-41, -41, -1, -1]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert nms_class_aware_numba(boxes, scores, np.array([0, 1], np.int32), 0.5, 10).tolist() \
        == [0, 1]
    # negative coordinates within one class are fine in both
    same = np.zeros(2, np.int32)
    np.testing.assert_array_equal(nms_class_aware_numba(boxes, scores, same, 0.5, 10),
                                  nms_class_aware(boxes, scores, same, 0.5, 10))
    flat = np.array([[0, 0, 0, 5], [100, 100, 100, 105]], np.float32)     # zero width, far apart
    assert nms_class_aware_numba(flat, scores, same, 0.5, 10).tolist() == [0, 1]


def test_nms_iou_at_threshold_is_kept_and_no_plus_one():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [5, 0, 15, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    cls = np.zeros(3, np.int32)
    for iou in (0.5, 0.34, 0.3333, 0.33):   # IoU(0,1) = 0.5; IoU(0,2) = 50/150 (no +1 widths)
        np.testing.assert_array_equal(nms_class_aware_numba(boxes, scores, cls, iou, 10),
                                      nms_class_aware(boxes, scores, cls, iou, 10))


# --- the whole decoder --------------------------------------------------------------------------


def yolo_output(rng: np.random.Generator, classes: int, anchors: int = 8400,
                candidates: int = 1000, size: float = 640.0, inside: bool = True) -> np.ndarray:
    pred = np.empty((1, 4 + classes, anchors), np.float32)
    pred[0, 4:] = rng.random((classes, anchors), dtype=np.float32) * 0.2
    idx = rng.choice(anchors, candidates, replace=False)
    pred[0, 4 + rng.integers(0, classes, candidates), idx] = rng.uniform(0.1, 1.0, candidates)
    centres = rng.uniform(0, size, (30, 2))
    c = centres[rng.integers(0, 30, anchors)] + rng.normal(0, 20, (anchors, 2))
    wh = rng.uniform(4, 200, (anchors, 2))
    if inside:
        c = np.clip(c, wh / 2, size - wh / 2)
    pred[0, 0:2], pred[0, 2:4] = c.T, wh.T
    return pred


def assert_same_detections(a, b):
    assert len(a) == len(b) and a.labels == b.labels
    for name in ("boxes", "scores", "class_ids"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("classes", [1, 3, 80])
def test_decoder_matches_numpy_decoder(classes):
    rng = np.random.default_rng(classes)
    labels = tuple(f"c{i}" for i in range(classes))
    transform = plan_transform((1080, 1920), (640, 640), "letterbox")
    for trial in range(4):
        conf, iou = (0.25, 0.45) if trial % 2 == 0 else (0.45, 0.6)
        out = yolo_output(rng, classes, inside=classes > 1)   # one class: any coordinates
        ref = YoloV8Decoder(labels, 1, conf, iou, max_det=8400)
        kern = YoloV8Kernel(labels, 1, conf, iou, max_det=8400, anchors=8400)
        outputs = [np.zeros(3, np.float32), out]
        assert_same_detections(kern(outputs, transform), ref(outputs, transform))
        # max_det caps kept boxes: the reference over all candidates, then the first max_det
        kern100 = YoloV8Kernel(labels, 1, conf, iou, max_det=100, anchors=8400)(outputs, transform)
        full = ref(outputs, transform)
        assert len(kern100) == min(100, len(full))
        np.testing.assert_array_equal(kern100.scores, full.scores[:100])
        np.testing.assert_array_equal(kern100.boxes, full.boxes[:100])


def test_decoder_reads_read_only_outputs():
    labels = ("a", "b", "c")
    out = yolo_output(np.random.default_rng(9), 3)
    out.flags.writeable = False
    transform = plan_transform((640, 640), (640, 640), "stretch")
    assert_same_detections(YoloV8Kernel(labels, 0, 0.25, 0.45, 8400)([out], transform),
                           YoloV8Decoder(labels, 0, 0.25, 0.45, 8400)([out], transform))


def test_decoder_drops_non_finite_boxes_and_maps_the_rest():
    """A broken model's NaN/inf box must not reach a record; the others map to frame pixels."""
    labels = ("a", "b")
    pred = np.zeros((1, 6, 4), np.float32)
    pred[0, :4, :] = np.array([[100, 100, 20, 20], [300, 300, 20, 20], [500, 200, 20, 20],
                               [200, 500, 20, 20]], np.float32).T
    pred[0, 4, :] = 0.9
    pred[0, 0, 1] = np.nan
    pred[0, 2, 2] = np.inf
    transform = plan_transform((320, 320), (640, 640), "stretch")   # frame = input / 2
    det = YoloV8Kernel(labels, 0, 0.25, 0.45, 100, anchors=4)([pred], transform)
    assert len(det) == 2 and np.isfinite(det.boxes).all()
    np.testing.assert_allclose(sorted(det.boxes[:, 0].tolist()), [45.0, 95.0])


def test_decoder_empty_and_growing_anchor_count():
    labels = ("a", "b")
    transform = plan_transform((480, 640), (320, 320), "letterbox")
    kern = YoloV8Kernel(labels, 0, 0.25, 0.45, 2100, anchors=100)
    kern.warm_up(classes=2)
    quiet = np.zeros((1, 6, 100), np.float32)
    assert len(kern([quiet], transform)) == 0
    out = yolo_output(np.random.default_rng(5), 2, anchors=2100, candidates=300, size=320)
    assert_same_detections(kern([out], transform),
                           YoloV8Decoder(labels, 0, 0.25, 0.45, 2100)([out], transform))
    assert kern.capacity == 2100
