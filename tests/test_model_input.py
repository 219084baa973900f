"""How edgert feeds a model it was handed: metadata, layout, fixed shapes, onnxruntime's errors.

Real models from the shared material where one fits (skipped when it is absent), real ONNX
graphs from tests/onnx_models.py otherwise; every session is a real onnxruntime session.
"""

from __future__ import annotations

from pathlib import Path

import json

import cv2
import numpy as np
import pytest

from conftest import edgert, mobilenet_lines, write_config
from onnx_models import channels_last, pooled_classifier

from edgert.clock import LIVE
from edgert.config import load_config
from edgert.errors import ConfigError, ModelError
from edgert.config.types import InputConfig
from edgert.frame import Frame
from edgert.infer import load_model
from edgert.infer.messages import ort_message
from edgert.preprocess import ReferencePreprocessor
from edgert.wiring import build_rungs

DEVICE = """
device_id = "model-input"

[source]
url = "images:{image}"

[model]
path = "{model}"
{model_extra}

[fail_safe]
action = "stop"

[[outputs]]
type = "stdout"

{tail}
"""


def device(folder: Path, model: Path, image: Path, model_extra: str = "", tail: str = "",
           name: str = "device.toml") -> Path:
    return write_config(folder / name, DEVICE.format(model=model, image=image,
                                                     model_extra=model_extra, tail=tail))


def preprocessor(config: Path):   # noqa: ANN201 - the main rung's preprocessor
    rungs, _ = build_rungs(load_config(config), LIVE)
    return rungs[0].preprocess


# Ultralytics metadata (issue 14, item 5).

def test_an_ultralytics_export_is_fed_rgb_0_to_1_as_its_metadata_says(
        tmp_path: Path, material: Path) -> None:
    """Nothing in the config: the default family would otherwise see BGR 0..255."""
    model, bus = material / "models/yolov8n_untrained_640.onnx", material / "images/bus.jpg"
    config = device(tmp_path, model, bus)
    pre = preprocessor(config)
    assert (pre.cfg.color, pre.cfg.scale, pre.cfg.resize, pre.input_hw) == (
        "rgb", pytest.approx(1 / 255), "letterbox", (640, 640))
    image = cv2.imread(str(bus))
    tensor, _ = pre(Frame(0, image, 0.0, 0.0))
    # Ultralytics' own LetterBox: 1080x810 → 640x480, centred, grey 114; RGB; /255.
    canvas = np.full((640, 640, 3), 114, np.uint8)
    canvas[:, 80:560] = cv2.resize(image, (480, 640), interpolation=cv2.INTER_LINEAR)
    expected = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
    np.testing.assert_allclose(tensor, expected, atol=1.01 / 255)   # the kernels' 1 grey level

    proc = edgert("check", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "→ 640x640 nchw, rgb, ×1/255, letterbox, pad 114" in proc.stdout
    assert "(from the model's Ultralytics metadata)" in proc.stdout


def test_config_and_model_toml_win_over_the_metadata_key_by_key(tmp_path: Path,
                                                                  material: Path) -> None:
    (tmp_path / "y8.onnx").symlink_to(material / "models/yolov8n_untrained_640.onnx")
    (tmp_path / "model.toml").write_text('[model.input]\npad_value = 0\n')
    config = device(tmp_path, tmp_path / "y8.onnx", material / "images/bus.jpg",
                    '[model.input]\ncolor = "bgr"')
    pre = preprocessor(config)
    assert (pre.cfg.color, pre.cfg.pad_value, pre.cfg.scale) == ("bgr", 0, pytest.approx(1 / 255))
    proc = edgert("run", str(config))
    assert proc.returncode == 0, proc.stderr
    said = [ln for ln in proc.stderr.splitlines() if "model input:" in ln]
    assert said == ["edgert: INFO: model input: 640x640 nchw, bgr, ×1/255, letterbox, pad 0 "
                    "(color from config; pad_value from model.toml; the rest from the model's "
                    "Ultralytics metadata)"], proc.stderr


def test_a_model_without_metadata_says_its_input_is_edgerts_defaults(
        tmp_path: Path, material: Path) -> None:
    config = device(tmp_path, material / "models/yolox_nano_coco_416.onnx",
                    material / "images/bus.jpg", 'family = "yolox"\n\n[model.input]\n'
                    'align = "top_left"')
    proc = edgert("check", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "→ 416x416 nchw, bgr, ×1, letterbox, pad 114, top-left" in proc.stdout
    assert "(align from config; the rest from edgert's defaults)" in proc.stdout
    assert "declares a fixed input" not in proc.stderr   # a static model, no size: its own


# Channels-last inputs (issue 14, item 2).

@pytest.mark.parametrize("kernels", ["numba", "reference"])
def test_a_channels_last_export_is_read_as_such_and_gives_the_same_outputs(
        tmp_path: Path, material: Path, kernels: str) -> None:
    nchw = material / "models/mobilenetv2-12-int8.onnx"
    nhwc = channels_last(nchw, tmp_path / "mobilenet_nhwc.onnx")
    bus = material / "images/bus.jpg"
    frame = Frame(0, cv2.imread(str(bus)), 0.0, 0.0)
    tensors, outputs = [], []
    for model in (nchw, nhwc):   # no layout key: the file says it
        config = device(tmp_path, model, bus, mobilenet_lines(material),
                        f'[runtime]\nkernels = "{kernels}"')
        rungs, _ = build_rungs(load_config(config), LIVE)
        pre, runner = rungs[0].preprocess, rungs[0].runner
        tensor, _ = pre(frame)
        tensors.append(tensor.copy())
        outputs.append(runner.run(tensor).outputs[0])
    assert tensors[0].shape == (1, 3, 224, 224) and tensors[1].shape == (1, 224, 224, 3)
    assert np.array_equal(tensors[1].transpose(0, 3, 1, 2), tensors[0])
    np.testing.assert_array_equal(outputs[1], outputs[0])


def test_edgert_run_decides_alike_on_both_layouts_and_check_says_which(
        tmp_path: Path, material: Path) -> None:
    nchw = material / "models/mobilenetv2-12-int8.onnx"
    nhwc = channels_last(nchw, tmp_path / "mobilenet_nhwc.onnx")
    bus = material / "images/bus.jpg"
    found = []
    for model, layout in ((nchw, ""), (nhwc, 'layout = "nhwc"')):
        config = device(tmp_path, model, bus, mobilenet_lines(material, input_extra=layout))
        proc = edgert("run", str(config))
        assert proc.returncode == 0, proc.stderr
        record = json.loads(proc.stdout.splitlines()[0])
        found.append([(d["label"], round(d["score"], 6)) for d in record["detections"]])
    assert len(found[0]) == 5 and found[0] == found[1]
    proc = edgert("check", str(config))
    assert proc.returncode == 0, proc.stderr
    assert ("input_nhwc [None, 224, 224, 3] float32 → 224x224 nhwc, rgb, ×1/255, center_crop"
            in proc.stdout), proc.stdout


def test_a_layout_that_contradicts_the_file_names_the_key(tmp_path: Path,
                                                            material: Path) -> None:
    nhwc = channels_last(material / "models/mobilenetv2-12-int8.onnx", tmp_path / "m.onnx")
    config = device(tmp_path, nhwc, material / "images/bus.jpg",
                    mobilenet_lines(material, input_extra='layout = "nchw"'))
    with pytest.raises(ModelError, match=r"device\.toml: model\.input\.layout is 'nchw' but "
                       r".*m\.onnx takes \[None, 224, 224, 3\], channels last; set layout = "
                       r'"nhwc" or remove it'):
        build_rungs(load_config(config), LIVE)
    bad = device(tmp_path, nhwc, material / "images/bus.jpg",
                 mobilenet_lines(material, input_extra='layout = "hwc"'))
    with pytest.raises(ConfigError, match=r"model\.input\.layout: is 'hwc'; use one of 'nchw', "
                       "'nhwc'"):
        load_config(bad)


# Fixed input shapes that are placeholders (issue 14, item 1).

def warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("edgert: WARNING:")]


def test_a_placeholder_input_runs_at_the_size_the_config_gives(tmp_path: Path,
                                                               material: Path) -> None:
    model, bus = pooled_classifier(tmp_path / "m.onnx"), material / "images/bus.jpg"
    config = device(tmp_path, model, bus, 'family = "classify"\n\n[model.input]\nsize = [64, 64]')
    proc = edgert("run", str(config))
    assert proc.returncode == 0, proc.stderr
    assert warnings(proc.stderr) == [f"edgert: WARNING: {config}: {model} declares a fixed input "
                                     "[10, 3, 32, 32]; running it at [1, 3, 64, 64], as "
                                     "model.input.size says"], proc.stderr
    record = json.loads(proc.stdout.splitlines()[0])
    # What the model says of this photo at 64x64, worked out by hand from its weights.
    tensor, _ = ReferencePreprocessor(InputConfig(), (64, 64), np.float32)(
        Frame(0, cv2.imread(str(bus)), 0.0, 0.0))
    logits = tensor.mean(axis=(2, 3)) @ (np.arange(12, dtype=np.float32).reshape(3, 4) / 100)
    p = np.exp(logits[0] - logits[0].max())
    p /= p.sum()
    assert record["status"] == "ok" and record["detections"][0]["label"] == "class_3"
    assert record["detections"][0]["score"] == pytest.approx(float(p[3]), abs=1e-3)
    proc = edgert("check", str(config))
    assert proc.returncode == 0, proc.stderr
    assert ("x [1, 3, 64, 64] float32 (rewritten: the file declares [10, 3, 32, 32]) → 64x64 "
            "nchw" in proc.stdout), proc.stdout


def test_a_placeholder_batch_alone_is_rewritten_to_one_frame(tmp_path: Path,
                                                             material: Path) -> None:
    model = pooled_classifier(tmp_path / "m.onnx")
    config = device(tmp_path, model, material / "images/bus.jpg", 'family = "classify"')
    proc = edgert("run", str(config))
    assert proc.returncode == 0, proc.stderr
    assert warnings(proc.stderr) == [f"edgert: WARNING: {config}: {model} declares a fixed input "
                                     "[10, 3, 32, 32]; running it at [1, 3, 32, 32], one frame "
                                     "at a time"], proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["status"] == "ok"


def test_yolox_exported_at_416_runs_at_320_and_still_finds_the_bus(tmp_path: Path,
                                                                   material: Path) -> None:
    model, bus = material / "models/yolox_nano_coco_416.onnx", material / "images/bus.jpg"
    config = device(tmp_path, model, bus, f"""family = "yolox"
labels = "{material / 'models/coco80.names'}"
conf = 0.5

[model.input]
align = "top_left"
size = [320, 320]""")
    proc = edgert("run", str(config))
    assert proc.returncode == 0, proc.stderr
    assert warnings(proc.stderr) == [f"edgert: WARNING: {config}: {model} declares a fixed input "
                                     "[1, 3, 416, 416]; running it at [1, 3, 320, 320], as "
                                     "model.input.size says"], proc.stderr
    labels = [d["label"] for d in json.loads(proc.stdout.splitlines()[0])["detections"]]
    assert "bus" in labels and "person" in labels


def test_a_model_that_holds_its_size_inside_is_one_clear_error(tmp_path: Path,
                                                               material: Path) -> None:
    """The YOLOv8 export's head concatenates 8400 anchors, fixed for 640x640."""
    model = material / "models/yolov8n_untrained_640.onnx"
    config = device(tmp_path, model, material / "images/bus.jpg",
                    "[model.input]\nsize = [320, 320]")
    proc = edgert("check", str(config))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    said = [ln for ln in proc.stderr.splitlines() if "compiling kernels" not in ln]
    assert len(said) == 1, proc.stderr
    assert said[0].startswith(f"edgert: {config}: model.input.size: onnxruntime cannot run "
                              f"{model} at [1, 3, 320, 320] instead of the [1, 3, 640, 640] its "
                              "file declares ("), said[0]
    assert "Concat" in said[0] and "[ONNXRuntimeError]" not in said[0]
    assert said[0].endswith("remove model.input.size to run it at its own size, or export it "
                            "at that size or with a dynamic input shape"), said[0]


# onnxruntime's own words (issue 14, item 4).

def test_an_onnxruntime_message_keeps_its_later_lines_and_drops_its_prefix(
        material: Path) -> None:
    session, info = load_model(material / "models/yolox_nano_coco_416.onnx")
    with pytest.raises(Exception) as raised:   # onnxruntime's own (private) exception type
        session.run(None, {info.input_name: np.zeros((1, 3, 320, 320), np.float32)})
    assert "index: 2 Got: 320 Expected: 416" not in str(raised.value).splitlines()[0]
    said = ort_message(raised.value)
    assert said == ("Got invalid dimensions for input: images for the following indices; "
                    "index: 2 Got: 320 Expected: 416; index: 3 Got: 320 Expected: 416; "
                    "Please fix either the inputs/outputs or the model"), said
