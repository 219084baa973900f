"""Preprocessing geometry, decoding back to frame pixels, and inference the loop can give up on."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from onnx_models import matmul_chain, one_box_pred, yolo_constant

from edgert.config.types import InputConfig, ModelConfig, RuntimeConfig
from edgert.clock import monotonic
from edgert.frame import Frame
from edgert.infer import InferenceRunner, load_model
from edgert.postprocess import make_decoder
from edgert.preprocess import ReferencePreprocessor, plan_transform


def frame_of(image: np.ndarray) -> Frame:
    return Frame(0, image, time.time(), monotonic())


def test_letterbox_matches_an_independent_ultralytics_style_letterbox() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (360, 640, 3), np.uint8)
    cfg = InputConfig(color="rgb", scale=1 / 255)
    pre = ReferencePreprocessor(cfg, (320, 320), np.float32)
    tensor, t = pre(frame_of(image))
    # The well-known recipe, written out independently.
    r = min(320 / 360, 320 / 640)
    nw, nh = round(640 * r), round(360 * r)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((320, 320, 3), 114, np.uint8)
    top, left = (320 - nh) // 2, (320 - nw) // 2
    canvas[top:top + nh, left:left + nw] = resized
    expected = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
    np.testing.assert_allclose(tensor, expected, atol=1e-6)
    assert t.pad_xy == (left, top)


def test_buffers_are_reused_between_frames() -> None:
    pre = ReferencePreprocessor(InputConfig(), (64, 64), np.float32)
    a, _ = pre(frame_of(np.zeros((48, 64, 3), np.uint8)))
    b, _ = pre(frame_of(np.full((48, 64, 3), 200, np.uint8)))
    assert a is b and float(b.max()) == 200.0


def test_mean_std_and_center_crop() -> None:
    image = np.full((300, 400, 3), (10, 20, 30), np.uint8)   # BGR
    cfg = InputConfig(resize="center_crop", color="rgb", scale=1 / 255,
                      mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    tensor, t = ReferencePreprocessor(cfg, (224, 224), np.float32)(frame_of(image))
    rgb = np.array([30, 20, 10]) / 255
    want = (rgb - 0.5) / np.array([0.25, 0.5, 1.0])
    np.testing.assert_allclose(tensor[0, :, 100, 100], want, rtol=1e-5)
    # Shorter side 300 → 224/0.875 = 256: the crop is 300*224/256 = 262.5 → 262 px square.
    assert t.crop[2] == t.crop[3] == 262


@pytest.mark.parametrize("resize", ["letterbox", "stretch", "center_crop"])
def test_box_round_trip_through_the_transform(resize: str) -> None:
    t = plan_transform((360, 640), (320, 320), resize)
    frame_box = np.array([[300.0, 150.0, 380.0, 200.0]], np.float32)
    x, y, w, h = t.crop
    sx, sy = t.scale_xy
    inp = np.array([[(frame_box[0, 0] - x) * sx + t.pad_xy[0], (frame_box[0, 1] - y) * sy + t.pad_xy[1],
                     (frame_box[0, 2] - x) * sx + t.pad_xy[0], (frame_box[0, 3] - y) * sy + t.pad_xy[1]]],
                   np.float32)
    t.to_frame(inp)
    np.testing.assert_allclose(inp, frame_box, atol=1e-3)


def test_yolov8_decoder_maps_the_models_box_to_frame_pixels(tmp_path: Path) -> None:
    # The model "sees" a 16x16 box centred at (32, 40) of its 64x64 input.
    path = yolo_constant(tmp_path / "m.onnx", one_box_pred(box=(32, 40, 16, 16)),
                         metadata={"names": "{0: 'part', 1: 'defect'}"})
    session, info = load_model(path)
    assert info.names == ("part", "defect") and info.static_hw == (64, 64)
    decoder = make_decoder(ModelConfig(path=path, conf=0.25), info, (64, 64))
    pre = ReferencePreprocessor(InputConfig(), (64, 64), np.float32)
    tensor, t = pre(frame_of(np.zeros((64, 128, 3), np.uint8)))   # letterbox: scale 0.5, pad y 16
    det = decoder(session.run(None, {"images": tensor}), t)
    assert len(det) == 1 and det.label(0) == "defect"
    np.testing.assert_allclose(det.boxes[0], [48, 32, 80, 64], atol=1e-4)


def test_classify_decoder_softmaxes_logits(material: Path) -> None:
    labels = tuple(ln.strip() for ln in (material / "models/imagenet1000_simple_labels.txt")
                   .read_text().splitlines() if ln.strip())
    cfg = ModelConfig(path=material / "models/mobilenetv2-12-int8.onnx", family="classify",
                      labels=labels, conf=0.0, top_k=3,
                      input=InputConfig(resize="center_crop", color="rgb", scale=1 / 255, size=(224, 224),
                                        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
    session, info = load_model(cfg.path)
    decoder = make_decoder(cfg, info, (224, 224))
    pre = ReferencePreprocessor(cfg.input, (224, 224), np.float32)
    image = cv2.imread(str(material / "images/bus.jpg"))
    tensor, t = pre(frame_of(image))
    det = decoder(session.run(None, {info.input_name: tensor}), t)
    assert len(det) == 3 and not det.has_boxes
    assert det.scores[0] >= det.scores[1] >= det.scores[2] and det.scores.sum() <= 1.0 + 1e-5
    assert any(w in det.label(0) for w in ("bus", "minibus", "trolley", "cart", "school"))


def test_a_run_stopped_from_another_thread_ends_between_operators(tmp_path: Path) -> None:
    """What the deadline guard relies on: terminate() from its thread ends the loop's run early."""
    path = matmul_chain(tmp_path / "chain.onnx", size=768, depth=24)
    session, info = load_model(path, RuntimeConfig(intra_op_threads=1))
    runner = InferenceRunner(session, info.input_name)
    tensor = np.random.default_rng(0).random((1, 3, 64, 64), np.float32)
    full = []
    for _ in range(5):
        res = runner.run(tensor)
        assert res.outputs is not None
        full.append(res.seconds)
    median = statistics.median(full)
    stopped = []
    for _ in range(5):
        runner.reset()
        timer = threading.Timer(median * 0.2, runner.terminate)
        timer.start()
        res = runner.run(tensor)
        timer.join()
        assert res.outputs is None and res.stopped and res.error is None
        stopped.append(res.seconds)
    # The run ended near the stop, not at its natural end.
    assert statistics.median(stopped) < median * 0.7, (stopped, median)
    assert runner.terminated == 5
    runner.reset()
    res = runner.run(tensor)   # the runner is usable again
    assert res.outputs is not None and res.outputs[0].shape == (1, 6, 64)
