"""Every model family against a real model (or a real graph of the family's exact layout)."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import edgert, write_config
from onnx_models import rows_per_pixel, yolo_constant

from edgert.config.types import InputConfig, ModelConfig
from edgert.errors import DecoderError, ModelError
from edgert.frame import Frame
from edgert.infer import load_model
from edgert.postprocess import make_decoder
from edgert.preprocess import ReferencePreprocessor


def detect(cfg: ModelConfig, image: np.ndarray, hw: tuple[int, int]):
    session, info = load_model(cfg.path)
    decoder = make_decoder(cfg, info, hw)
    tensor, t = ReferencePreprocessor(cfg.input, hw, info.input_dtype)(Frame(0, image, 0.0, 0.0))
    return decoder(session.run(None, {info.input_name: tensor}), t)


def labels_of(path: Path) -> tuple[str, ...]:
    return tuple(ln.strip() for ln in path.read_text().splitlines() if ln.strip())


def test_yolox_nano_finds_the_bus_and_three_people(material: Path) -> None:
    cfg = ModelConfig(path=material / "models/yolox_nano_coco_416.onnx", family="yolox",
                      labels=labels_of(material / "models/coco80.names"), conf=0.5,
                      input=InputConfig(align="top_left"))   # BGR 0..255, top-left letterbox
    image = cv2.imread(str(material / "images/bus.jpg"))
    det = detect(cfg, image, (416, 416))
    found = [det.label(i) for i in range(len(det))]
    assert sorted(found) == ["bus", "person", "person", "person"], det.to_dets()
    bus = det.boxes[found.index("bus")]
    assert det.scores[found.index("bus")] > 0.85
    assert bus[2] - bus[0] > 0.8 * image.shape[1]          # the bus spans the photo's width
    people = det.boxes[[i for i, f in enumerate(found) if f == "person"]]
    assert (people[:, 3] > 800).all()                       # standing on the street, bottom half


def test_ultraface_finds_faces_and_only_where_there_are_people(material: Path) -> None:
    cfg = ModelConfig(path=material / "models/ultraface_version-slim-320.onnx", family="ssd",
                      labels=("face",), conf=0.7,
                      input=InputConfig(resize="stretch", color="rgb", scale=1 / 128,
                                        mean=(127 / 128,) * 3))
    crowd = detect(cfg, cv2.imread(str(material / "images/000000005001.jpg")), (240, 320))
    assert len(crowd) >= 5 and crowd.scores[0] > 0.95
    w = crowd.boxes[:, 2] - crowd.boxes[:, 0]
    h = crowd.boxes[:, 3] - crowd.boxes[:, 1]
    assert ((h / w > 0.8) & (h / w < 2.5)).all()            # face-shaped boxes
    bus = detect(cfg, cv2.imread(str(material / "images/bus.jpg")), (240, 320))
    assert len(bus) >= 2 and (bus.boxes[:, 3] < 550).all()  # heads, not feet


def test_yolov8n_export_metadata_is_read(material: Path) -> None:
    _, info = load_model(material / "models/yolov8n_untrained_640.onnx")
    assert info.metadata["task"] == "detect"
    assert info.static_hw == (640, 640) and info.names is not None and len(info.names) == 80


def test_yolov5_layout_multiplies_objectness(tmp_path: Path) -> None:
    pred = np.zeros((1, 40, 7), np.float32)           # [1, N, 5+2]
    pred[0, :, :4] = [32, 32, 4, 4]
    pred[0, 0] = [20, 20, 10, 10, 0.9, 0.1, 0.8]      # 0.72 for class 1
    pred[0, 1] = [40, 40, 10, 10, 0.3, 0.9, 0.0]      # 0.27: below conf 0.5
    path = yolo_constant(tmp_path / "v5.onnx", pred)
    det = detect(ModelConfig(path=path, family="yolov5", conf=0.5), np.zeros((64, 64, 3), np.uint8),
                 (64, 64))
    assert len(det) == 1 and det.class_ids[0] == 1
    assert det.scores[0] == pytest.approx(0.72)
    np.testing.assert_allclose(det.boxes[0], [15, 15, 25, 25], atol=1e-4)


def test_end_to_end_export_skips_nms(tmp_path: Path) -> None:
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = [10, 10, 30, 30, 0.9, 2]
    rows[0, 1] = [12, 12, 30, 30, 0.8, 2]             # overlaps: an in-graph NMS kept both
    path = yolo_constant(tmp_path / "e2e.onnx", rows,
                         metadata={"end2end": "True", "names": "{0: 'a', 1: 'b', 2: 'c'}"})
    det = detect(ModelConfig(path=path, family="yolov8"), np.zeros((64, 64, 3), np.uint8), (64, 64))
    assert [det.label(i) for i in range(len(det))] == ["c", "c"]


def test_user_decoder_by_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_decoders.py").write_text(textwrap.dedent("""
        import numpy as np
        def decode(outputs, ctx):
            # One box at the centre of the input, class 1, from any model.
            h, w = ctx.input_hw
            return np.array([[w/4, h/4, 3*w/4, 3*h/4]]), np.array([0.75]), np.array([1])
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    path = yolo_constant(tmp_path / "m.onnx", np.zeros((1, 6, 8), np.float32))
    cfg = ModelConfig(path=path, family="my_decoders:decode", labels=("x", "y"))
    det = detect(cfg, np.zeros((64, 128, 3), np.uint8), (64, 64))
    assert len(det) == 1 and det.label(0) == "y"
    np.testing.assert_allclose(det.boxes[0], [32, 0, 96, 64], atol=1e-4)
    sys.modules.pop("my_decoders", None)


def test_family_that_does_not_fit_the_outputs_is_a_clear_error(tmp_path: Path) -> None:
    path = yolo_constant(tmp_path / "m.onnx", np.zeros((1, 6, 8), np.float32))
    _, info = load_model(path)
    with pytest.raises(ModelError, match=r"m\.onnx.*family 'ssd'.*check model\.family"):
        make_decoder(ModelConfig(path=path, family="ssd"), info, (64, 64))


# A family that does not fit the outputs: said at load, with the family that does.

def test_classify_refuses_an_output_without_the_batch_first(tmp_path: Path) -> None:
    path = yolo_constant(tmp_path / "head.onnx", np.zeros((1600, 80), np.float32))
    _, info = load_model(path)
    with pytest.raises(ModelError) as e:
        make_decoder(ModelConfig(path=path, family="classify"), info, (64, 64))
    assert str(e.value) == (
        f"{path}: family 'classify' needs an output shaped [N, classes] with N the batch (1 or "
        "dynamic), but the outputs are output0 [1600, 80]; check model.family: no built-in "
        'family reads these outputs; a decoder of your own can (docs/models.md, "A decoder of '
        'your own")')


def test_a_detector_called_a_classifier_is_told_its_family(material: Path) -> None:
    path = material / "models/yolox_nano_coco_416.onnx"
    _, info = load_model(path)
    with pytest.raises(ModelError, match=r"family 'classify' needs .* the outputs are output "
                       r"\[1, 3549, 85\]; check model\.family: the outputs fit family 'yolov5' "
                       r"or 'yolox'$"):
        make_decoder(ModelConfig(path=path, family="classify"), info, (416, 416))


def test_classify_refuses_a_dynamic_batch_that_gives_many_rows(tmp_path: Path) -> None:
    # The file says [N, 80]; each run gives 1600 rows: not one image's class scores.
    path = rows_per_pixel(tmp_path / "rows.onnx", 80, 25)
    cfg = ModelConfig(path=path, family="classify", input=InputConfig(size=(64, 64)))
    assert load_model(path)[1].output_shapes == ((None, 80),)
    with pytest.raises(DecoderError, match=re.escape(
            "output output0 is [1600, 80], but family 'classify' reads [1, 80]")):
        detect(cfg, np.zeros((64, 64, 3), np.uint8), (64, 64))


def test_a_real_classifier_still_reads_as_one(material: Path) -> None:
    path = material / "models/mobilenetv2-12-int8.onnx"
    _, info = load_model(path)
    decoder = make_decoder(ModelConfig(path=path, family="classify"), info, (224, 224))
    assert len(decoder.labels) == 1000 and decoder.output_name == "output"


ZONE_RULE = """
[[zones]]
name = "gate"
polygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]

[[rules]]
name = "in-gate"
zone = "gate"
action = "stop"
"""


def zone_config(tmp: Path, model: Path) -> Path:
    return write_config(tmp / "d.toml", f'device_id = "z"\n[source]\nurl = "pattern:"\n[model]\n'
                        f'path = "{model}"\nfamily = "classify"\n[fail_safe]\naction = "stop"\n'
                        + ZONE_RULE)


def test_a_zone_rule_does_not_hide_that_the_outputs_are_a_detectors(tmp_path: Path) -> None:
    # The mistake is the family; the zone rule is only fine for the family actually meant.
    model = yolo_constant(tmp_path / "det.onnx", np.zeros((1, 6, 8), np.float32))
    proc = edgert("check", str(zone_config(tmp_path, model)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "family 'classify' needs" in proc.stderr and "fit family 'yolov8'" in proc.stderr
    assert "rules[0].zone" not in proc.stderr


def test_a_zone_rule_on_a_real_classifier_is_still_refused(tmp_path: Path, material: Path) -> None:
    proc = edgert("check", str(zone_config(tmp_path, material / "models/mobilenetv2-12-int8.onnx")))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ("rules[0].zone: of rule 'in-gate' needs boxes, but a classify model has none; "
            "remove zone from this rule") in proc.stderr
