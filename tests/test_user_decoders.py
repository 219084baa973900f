"""Decoders of one's own: the worked examples of docs/models.md on the real UltraFace and on a
model with the row layout of face detectors with landmarks, and the edges of the contract."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, edgert, write_config
from onnx_models import yolo_constant

from edgert.config.types import InputConfig, ModelConfig
from edgert.errors import DecoderError
from edgert.frame import Frame
from edgert.infer import load_model
from edgert.postprocess import make_decoder
from edgert.preprocess import ReferencePreprocessor

UFACE_INPUT = InputConfig(resize="stretch", color="rgb", scale=1 / 128, mean=(127 / 128,) * 3)


def doc_decoders(root: Path) -> Path:
    """Every `# my_models/NAME.py` block of docs/models.md, written as a package under root."""
    text = (REPO / "docs/models.md").read_text()
    blocks = re.findall(r"```python\n# (my_models/\w+\.py)\n(.*?)```", text, re.S)
    assert {p for p, _ in blocks} >= {"my_models/ultraface.py", "my_models/face5.py"}
    (root / "my_models").mkdir(parents=True)
    (root / "my_models/__init__.py").write_text("")
    for path, body in blocks:
        (root / path).write_text(body)
    return root


@pytest.fixture
def decoders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The docs' decoders and this test's own (`write`) importable for the test's duration."""
    root = doc_decoders(tmp_path / "py")
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m.split(".")[0] in ("my_models", "kp_test")]:
        del sys.modules[name]


def detect(cfg: ModelConfig, image: np.ndarray, hw: tuple[int, int]):
    session, info = load_model(cfg.path)
    decoder = make_decoder(cfg, info, hw)
    tensor, t = ReferencePreprocessor(cfg.input, hw, info.input_dtype)(Frame(0, image, 0.0, 0.0))
    return decoder(session.run(None, {info.input_name: tensor}), t)


def face_rows(n: int = 16) -> np.ndarray:
    """[1, n, 15]: x1, y1, x2, y2, score, five x, y points in the 64x64 input's pixels."""
    rows = np.zeros((1, n, 15), np.float32)
    rows[0, 0, :5] = [10, 12, 30, 36, 0.9]        # A
    rows[0, 0, 5:] = [15, 20, 25, 20, 20, 26, 16, 31, 24, 31]
    rows[0, 1, :5] = [11, 12, 31, 36, 0.8]        # on A: NMS drops it and its points
    rows[0, 1, 5:] = 50
    rows[0, 2, :5] = [40, 40, 60, 56, 0.6]        # C, its lower part in the letterbox's pad
    rows[0, 2, 5:] = [44, 44, 56, 44, 50, 48, 45, 52, 55, 52]
    rows[0, 3, :5] = [5, 40, 20, 56, 0.2]         # below conf
    return rows


# The real model.

def test_ultraface_through_the_docs_decoder_finds_what_the_ssd_family_finds(
        decoders: Path, material: Path) -> None:
    image = cv2.imread(str(material / "images/000000005001.jpg"))
    model = material / "models/ultraface_version-slim-320.onnx"
    cfg = ModelConfig(path=model, family="ssd", labels=("face",), conf=0.7, input=UFACE_INPUT)
    builtin = detect(cfg, image, (240, 320))
    mine = detect(ModelConfig(path=model, family="my_models.ultraface:decode", labels=("face",),
                              conf=0.7, input=UFACE_INPUT), image, (240, 320))
    assert len(mine) >= 5 and len(mine) == len(builtin)
    np.testing.assert_allclose(mine.boxes, builtin.boxes, atol=1e-3)
    assert mine.keypoints is None and all(d.keypoints is None for d in mine.to_dets())


def test_keypoints_follow_their_face_through_nms_and_the_resize(decoders: Path,
                                                                material: Path) -> None:
    # Each face's box corners as two keypoints, scored with the face: after conf, NMS, max_det
    # and the stretch back to the photo they must still be that face's corners and score.
    (decoders / "kp_test.py").write_text(
        "import numpy as np\nfrom my_models import ultraface\n"
        "def decode(outputs, ctx):\n"
        "    boxes, scores, ids = ultraface.decode(outputs, ctx)\n"
        "    corners = boxes.reshape(-1, 2, 2)\n"
        "    s = np.repeat(scores[:, None, None], 2, axis=1)\n"
        "    return boxes, scores, ids, np.concatenate([corners, s], axis=2)\n")
    image = cv2.imread(str(material / "images/000000005001.jpg"))
    det = detect(ModelConfig(path=material / "models/ultraface_version-slim-320.onnx",
                             family="kp_test:decode", labels=("face",), conf=0.7, max_det=4,
                             input=UFACE_INPUT), image, (240, 320))
    assert len(det) == 4 and det.keypoints.shape == (4, 2, 3)
    np.testing.assert_allclose(det.keypoints[:, :, :2].reshape(-1, 4), det.boxes, atol=1e-3)
    np.testing.assert_allclose(det.keypoints[:, :, 2], np.repeat(det.scores[:, None], 2, 1))
    recs = det.to_dets()
    assert recs[0].keypoints[0] == (recs[0].box[0], recs[0].box[1], recs[0].score)


# A model with landmarks (the docs' face5 layout).

def test_landmarks_are_selected_with_their_boxes_and_letterboxed_back(
        decoders: Path, tmp_path: Path) -> None:
    path = yolo_constant(tmp_path / "face5.onnx", face_rows())
    frame = np.zeros((64, 128, 3), np.uint8)     # letterbox: scale 0.5, pad y 16
    cfg = ModelConfig(path=path, family="my_models.face5:decode", labels=("face",), conf=0.5)
    det = detect(cfg, frame, (64, 64))
    assert det.scores.tolist() == pytest.approx([0.9, 0.6])
    rows = face_rows()[0]
    want = rows[[0, 2], 5:].reshape(2, 5, 2).copy()
    want[..., 0] /= 0.5
    want[..., 1] = np.minimum((want[..., 1] - 16) / 0.5, 64)   # C's mouth: below the frame
    np.testing.assert_allclose(det.keypoints, want, atol=1e-4)
    assert det.to_dets()[0].keypoints[0] == (30.0, 8.0, None)    # x, y only: no score
    one = detect(ModelConfig(path=path, family="my_models.face5:decode", labels=("face",),
                             conf=0.5, max_det=1), frame, (64, 64))
    np.testing.assert_allclose(one.keypoints, want[:1], atol=1e-4)


def test_every_form_of_result_gives_the_same_detections(decoders: Path, tmp_path: Path) -> None:
    (decoders / "kp_test.py").write_text(
        "import numpy as np\nfrom edgert.postprocess import DecodeResult\n"
        "def parts(outputs):\n"
        "    r = outputs[0][0]\n"
        "    return r[:, :4], r[:, 4], np.zeros(len(r), np.int64), r[:, 5:].reshape(-1, 5, 2)\n"
        "def as_tuple(outputs, ctx): return parts(outputs)\n"
        "def as_list(outputs, ctx): return list(parts(outputs))\n"
        "def as_dict(outputs, ctx):\n"
        "    return dict(zip(('boxes', 'scores', 'class_ids', 'keypoints'), parts(outputs)))\n"
        "def as_result(outputs, ctx): return DecodeResult(*parts(outputs))\n"
        "def plain(outputs, ctx): return parts(outputs)[:3]\n")
    path = yolo_constant(tmp_path / "face5.onnx", face_rows())
    frame = np.zeros((64, 128, 3), np.uint8)
    got = {fn: detect(ModelConfig(path=path, family=f"kp_test:{fn}", conf=0.5), frame, (64, 64))
           for fn in ("as_tuple", "as_list", "as_dict", "as_result", "plain")}
    for fn, det in got.items():
        np.testing.assert_array_equal(det.boxes, got["plain"].boxes, err_msg=fn)
        if fn != "plain":
            np.testing.assert_array_equal(det.keypoints, got["as_tuple"].keypoints, err_msg=fn)
    assert got["plain"].keypoints is None


def test_a_non_finite_landmark_drops_its_face_only(decoders: Path, tmp_path: Path) -> None:
    rows = face_rows()
    rows[0, 2, 7] = np.nan
    path = yolo_constant(tmp_path / "face5.onnx", rows)
    det = detect(ModelConfig(path=path, family="my_models.face5:decode", conf=0.5),
                 np.zeros((64, 64, 3), np.uint8), (64, 64))
    assert det.scores.tolist() == pytest.approx([0.9]) and det.keypoints.shape == (1, 5, 2)


@pytest.mark.parametrize("body, says", [
    ("return r[:, :4], r[:, 4], np.zeros(len(r)), r[:, 5:]", "keypoints shaped (16, 10)"),
    ("return {'boxes': r[:, :4], 'scores': r[:, 4], 'class_id': np.zeros(len(r))}",
     "keys ['boxes', 'scores', 'class_id']"),
    ("return r[:, :4], r[:, 4], np.zeros(3)", "16 boxes, 16 scores and 3 class ids"),
    ("return r", "returned ndarray"),
])
def test_a_result_that_breaks_the_contract_is_named(decoders: Path, tmp_path: Path, body: str,
                                                    says: str) -> None:
    (decoders / "kp_test.py").write_text(
        f"import numpy as np\ndef decode(outputs, ctx):\n    r = outputs[0][0]\n    {body}\n")
    path = yolo_constant(tmp_path / "face5.onnx", face_rows())
    with pytest.raises(DecoderError, match=re.escape(says)) as e:
        detect(ModelConfig(path=path, family="kp_test:decode", conf=0.5),
               np.zeros((64, 64, 3), np.uint8), (64, 64))
    assert "decoder kp_test:decode" in str(e.value)


# The record, as a subscriber reads it.

def test_the_record_carries_keypoints_in_frame_pixels(tmp_path: Path) -> None:
    root = doc_decoders(tmp_path / "py")
    yolo_constant(tmp_path / "face5.onnx", face_rows())
    (tmp_path / "face.txt").write_text("face\n")
    cfg = write_config(tmp_path / "device.toml", """
device_id = "faces"
[source]
url = "pattern:"
[model]
path = "face5.onnx"
family = "my_models.face5:decode"
labels = "face.txt"
conf = 0.5
[runtime]
budget_ms = 1000
[fail_safe]
action = "stop"
[[outputs]]
type = "stdout"
""")
    proc = edgert("run", str(cfg), "--frames", "2", env={"PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert [r["status"] for r in recs] == ["ok", "ok"]
    face = recs[0]["detections"][0]
    # The 640x480 pattern letterboxed into 64x64: scale 0.1, pad y 8.
    assert face["label"] == "face" and face["box"] == [100.0, 40.0, 300.0, 280.0]
    assert face["keypoints"][0] == [150.0, 120.0, None] and len(face["keypoints"]) == 5


def test_the_annotated_video_draws_keypoints(tmp_path: Path) -> None:
    from edgert.config import load_config
    from edgert.records import Det
    from edgert.replay.annotate import AMBER, Annotator, Scene

    yolo_constant(tmp_path / "m.onnx", face_rows())
    cfg = load_config(write_config(tmp_path / "d.toml", 'device_id = "a"\n[source]\n'
                                   'url = "pattern:"\n[model]\npath = "m.onnx"\n'
                                   '[fail_safe]\naction = "stop"\n'))
    face = Det("face", 0, 0.9, (10.0, 30.0, 60.0, 90.0), None, ((20.0, 50.0, None),))
    img = np.zeros((120, 160, 3), np.uint8)
    annotator = Annotator(cfg, tmp_path / "a.mp4", 10, (160, 120))
    annotator.draw(img, Scene(img, 0, (face,), "none", "ok", 1.0))
    annotator.close()
    assert tuple(img[50, 20]) == AMBER


# Class ids and labels.

WRONG_COLUMN = """
import numpy as np
from my_models import ultraface

def decode(outputs, ctx):
    # A plausible slip: the face is column 1 of `scores`, so class 1 — but labels has one line.
    boxes, scores, ids = ultraface.decode(outputs, ctx)
    return boxes, scores, ids + 1
"""

def docs_ultraface_model(model: Path, family: str, labels: bool) -> str:
    """The worked example's [model] tables from docs/models.md, for this model and family."""
    text = (REPO / "docs/models.md").read_text()
    toml = re.search(r"UltraFace through a decoder of your own.*?```toml\n(.*?)```", text,
                     re.S).group(1)
    toml = toml.replace('"ultraface_version-slim-320.onnx"', f'"{model}"')
    toml = toml.replace('"my_models.ultraface:decode"', f'"{family}"')
    return toml if labels else re.sub(r"^labels = .*\n", "", toml, flags=re.M)


def uface_config(tmp: Path, material: Path, photos: list[str], family: str, labels: bool = True,
                 rules: str = "", blank_first: bool = False) -> Path:
    """A folder of the given photos (a blank frame first: the warm-up sees no face)."""
    images = tmp / "images"
    images.mkdir()
    if blank_first:
        cv2.imwrite(str(images / "0_blank.jpg"), np.zeros((240, 320, 3), np.uint8))
    for i, name in enumerate(photos, 1):
        (images / f"{i}_{name}").write_bytes((material / "images" / name).read_bytes())
    (tmp / "face.txt").write_text("face\n")
    model = docs_ultraface_model(material / "models/ultraface_version-slim-320.onnx", family,
                                 labels)
    return write_config(tmp / "faces.toml", f'device_id = "faces"\n[source]\n'
                        f'url = "images:{images}"\nmode = "every"\n{model}\n'
                        '[runtime]\nbudget_ms = 5000\n[fail_safe]\naction = "stop"\n'
                        f'[[outputs]]\ntype = "stdout"\n{rules}')


def test_a_class_id_beyond_the_labels_is_a_decoder_error_per_frame(tmp_path: Path,
                                                                   material: Path) -> None:
    root = doc_decoders(tmp_path / "py")
    (root / "kp_test.py").write_text(WRONG_COLUMN)
    cfg = uface_config(tmp_path, material, ["000000005001.jpg", "bus.jpg"], "kp_test:decode",
                       blank_first=True)
    proc = edgert("run", str(cfg), env={"PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr            # the loop went on
    recs = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert [(r["status"], r.get("cause"), r.get("stage")) for r in recs] == [
        ("ok", None, None), ("fail_safe", "error", "postprocess"),
        ("fail_safe", "error", "postprocess")]
    said = ("DecoderError: decoder kp_test:decode gave class_id 1, but model.labels has 1 label "
            "(ids 0 to 0); fix the decoder or the labels")
    assert recs[1]["error"] == said
    assert "postprocess_error on 1 frame(s) so far: " + said in proc.stderr


def test_a_class_id_beyond_the_labels_on_the_warm_up_frame_stops_the_start(
        tmp_path: Path, material: Path) -> None:
    root = doc_decoders(tmp_path / "py")
    (root / "kp_test.py").write_text(WRONG_COLUMN)
    cfg = uface_config(tmp_path, material, ["000000005001.jpg"], "kp_test:decode")
    proc = edgert("run", str(cfg), env={"PYTHONPATH": str(root)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "model.family 'kp_test:decode' failed on the first inference" in proc.stderr
    assert "gave class_id 1, but model.labels has 1 label" in proc.stderr


def test_without_labels_check_says_so_and_records_name_class_0(tmp_path: Path,
                                                                material: Path) -> None:
    root = doc_decoders(tmp_path / "py")
    cfg = uface_config(tmp_path, material, ["000000005001.jpg"], "my_models.ultraface:decode",
                       labels=False)
    env = {"PYTHONPATH": str(root)}
    proc = edgert("check", str(cfg), env=env)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("labels"))
    assert line == ("labels     none: records name classes class_0, class_1, … by class id "
                    "(model.labels is not set and the model's metadata has no 'names'; set "
                    "model.labels to a text file with one label per line)")
    proc = edgert("run", str(cfg), env=env)
    assert proc.returncode == 0, proc.stderr
    faces = json.loads(proc.stdout.splitlines()[0])["detections"]
    assert len(faces) >= 5 and {d["label"] for d in faces} == {"class_0"}


def test_a_rule_on_a_label_of_an_unlabelled_decoder_is_refused(tmp_path: Path,
                                                               material: Path) -> None:
    root = doc_decoders(tmp_path / "py")
    rule = '[[rules]]\nname = "faces"\nlabels = ["face"]\naction = "greet"\n'
    cfg = uface_config(tmp_path, material, ["bus.jpg"], "my_models.ultraface:decode",
                       labels=False, rules=rule)
    proc = edgert("check", str(cfg), env={"PYTHONPATH": str(root)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ("rules[0].labels: names 'face', but the model has no labels" in proc.stderr
            and "set model.labels" in proc.stderr)


def test_a_built_in_family_without_labels_names_classes_class_n(tmp_path: Path) -> None:
    pred = np.zeros((1, 40, 7), np.float32)           # yolov5 rows, two classes, no metadata
    pred[0, 0] = [20, 20, 10, 10, 0.9, 0.1, 0.8]
    yolo_constant(tmp_path / "v5.onnx", pred)
    cfg = write_config(tmp_path / "d.toml", 'device_id = "a"\n[source]\nurl = "pattern:"\n'
                       '[model]\npath = "v5.onnx"\nfamily = "yolov5"\n[fail_safe]\n'
                       'action = "stop"\n[[outputs]]\ntype = "stdout"\n')
    proc = edgert("check", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert "labels     2, unnamed: class_0, class_1 (model.labels is not set" in proc.stdout
    proc = edgert("run", str(cfg), "--frames", "1")
    assert json.loads(proc.stdout)["detections"][0]["label"] == "class_1"
