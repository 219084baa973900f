"""The motion gate on real video: an empty room stays unchanged, a person walking in is change,
flicker and sensor noise are not; its kernels against their numpy twins; [motion] config errors."""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import MATERIAL, edgert, write_config
from onnx_models import one_box_pred, yolo_constant
from test_config import GOOD

from edgert.config import load_config
from edgert.config.types import MotionConfig
from edgert.errors import ConfigError
from edgert.preprocess.motion import (MotionGate, block_edges, block_means_np,
                                      changed_blocks_np, kernels, zone_blocks)

VIDEO = "videos/intel_one-by-one-person-detection.mp4"   # 768x432, 10 fps, 1394 frames
EMPTY = 30        # the room with nobody in it (looked at)
STANDING = 300    # a man in a dark jacket standing at the table, x 382..676 (looked at)
WALKING_IN = range(61, 75)   # a woman walks in from the bottom left to the table (looked at)


def read_frames(indices: list[int]) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(MATERIAL / VIDEO))
    out, i = {}, 0
    while len(out) < len(indices):
        ok, image = cap.read()
        assert ok, f"{VIDEO} ended at frame {i}"
        if i in indices:
            image.setflags(write=False)   # as sources hand them out
            out[i] = image
        i += 1
    cap.release()
    return out


@pytest.fixture(scope="module")
def stills() -> dict[int, np.ndarray]:
    if not (MATERIAL / "README.md").is_file():
        pytest.skip(f"shared test material not found at {MATERIAL}")
    return read_frames([EMPTY, STANDING])


@dataclass
class Pass:
    """One pass over the video as the loop would make it, and what the test measures itself."""

    changed: np.ndarray      # (n,) the gate said changed
    inferred: np.ndarray     # (n,) changed or due: the model would have run
    empty: np.ndarray        # (n,) under 0.1 % of pixels differ from the empty room by > 20 levels
    moving: np.ndarray       # (n,) over 2 % of pixels differ from the previous frame by > 40 levels


@pytest.fixture(scope="module")
def video_pass() -> Pass:
    if not (MATERIAL / "README.md").is_file():
        pytest.skip(f"shared test material not found at {MATERIAL}")
    cap = cv2.VideoCapture(str(MATERIAL / VIDEO))
    fps = cap.get(cv2.CAP_PROP_FPS)
    gate, room, prev = None, None, None
    changed, inferred, empty, moving = [], [], [], []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if gate is None:
            gate = MotionGate(MotionConfig(), image.shape[:2])
            room = grey   # frame 0: the empty room
        media_s = len(changed) / fps
        c = gate.changed(image)
        run = gate.due(media_s) or c
        if run:
            gate.inferred(image, media_s)
        changed.append(c)
        inferred.append(run)
        # > 20 levels: the soft shadow of someone just gone is still there (and change)
        empty.append(np.mean(cv2.absdiff(grey, room) > 20) < 0.001)
        moving.append(prev is not None and np.mean(cv2.absdiff(grey, prev) > 40) > 0.02)
        prev = grey
    cap.release()
    return Pass(*(np.array(v) for v in (changed, inferred, empty, moving)))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """What GOOD (test_config's config) names beside it: a model and its labels."""
    yolo_constant(tmp_path / "model.onnx", one_box_pred())
    (tmp_path / "labels.txt").write_text("part\ndefect\n")
    return tmp_path


def gate_after(reference: np.ndarray, cfg: MotionConfig = MotionConfig(),
               mask: np.ndarray | None = None) -> MotionGate:
    gate = MotionGate(cfg, reference.shape[:2], mask)
    gate.inferred(reference, 0.0)
    return gate


# --- (a), (b): the video ---------------------------------------------------------------------

def test_the_empty_room_is_unchanged_on_the_large_majority_of_frames(video_pass: Pass) -> None:
    p = video_pass
    assert p.empty.sum() > 200 and p.empty[:50].all()   # seven empty stretches, frames 0–58 first
    unchanged = 1 - p.changed[p.empty].mean()
    assert unchanged >= 0.95, f"only {unchanged:.1%} of empty-room frames unchanged"


def test_a_person_walking_is_change(video_pass: Pass) -> None:
    p = video_pass
    assert p.moving.sum() > 100
    assert p.changed[p.moving].mean() >= 0.95, np.flatnonzero(p.moving & ~p.changed)
    assert p.changed[list(WALKING_IN)].all()


def test_the_gate_skips_much_of_the_video_but_never_longer_than_force_every_s(
        video_pass: Pass) -> None:
    p = video_pass
    assert 1 - p.inferred.mean() > 0.4
    gaps = np.diff(np.flatnonzero(p.inferred))
    assert gaps.max() <= 10   # 1 s at 10 fps


# --- (c), (d): flicker and noise are not change; a small object is ---------------------------

@pytest.mark.parametrize("which", [EMPTY, STANDING])
@pytest.mark.parametrize("levels", [-20, -10, 10, 20])
def test_a_global_brightness_change_is_not_change(stills, which: int, levels: int) -> None:
    base = stills[which]
    flicker = cv2.add(base, levels) if levels > 0 else cv2.subtract(base, -levels)  # saturating
    assert flicker.mean() != base.mean()
    assert not gate_after(base).changed(flicker)


@pytest.mark.parametrize("which", [EMPTY, STANDING])
@pytest.mark.parametrize("gain", [0.9, 1.1])
def test_an_exposure_change_is_not_change(stills, which: int, gain: float) -> None:
    base = stills[which]
    assert not gate_after(base).changed(cv2.convertScaleAbs(base, alpha=gain))


@pytest.mark.parametrize("which", [EMPTY, STANDING])
@pytest.mark.parametrize("sigma", [2.0, 3.0])
def test_sensor_noise_is_not_change(stills, which: int, sigma: float) -> None:
    base = stills[which]
    rng = np.random.default_rng(int(sigma * 10))
    noisy = np.clip(base + rng.normal(0.0, sigma, base.shape), 0, 255).astype(np.uint8)
    gate = gate_after(base)
    assert not gate.changed(noisy) and gate.share == 0.0
    shifted = np.clip(noisy.astype(np.int16) + 15, 0, 255).astype(np.uint8)
    assert not gate.changed(shifted)


def jacket(stills, hw: tuple[int, int]) -> np.ndarray:
    """A piece of the standing man's dark jacket, real pixels, hw in size."""
    h, w = hw
    return stills[STANDING][90:90 + h, 396:396 + w]


def paste(image: np.ndarray, patch: np.ndarray, y: int, x: int) -> np.ndarray:
    out = image.copy()
    out[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
    return out


def test_a_small_object_moving_in_is_change(stills) -> None:
    room = stills[EMPTY]
    patch = jacket(stills, (69, 96))   # 2.0 % of the 768x432 frame
    assert patch.size / room.size == pytest.approx(0.02, abs=0.001)
    gate = gate_after(room)
    there = paste(room, patch, 300, 100)   # on the floor, left
    assert gate.changed(there)
    gate.inferred(there, 0.1)
    assert not gate.changed(there)
    assert gate.changed(paste(room, patch, 300, 160))   # it moved 60 px right


def test_an_object_below_area_threshold_is_not_change(stills) -> None:
    room = stills[EMPTY]
    gate = gate_after(room)
    assert not gate.changed(paste(room, jacket(stills, (12, 12)), 300, 100))   # 0.04 %
    assert 0.0 < gate.share <= MotionConfig().area_threshold


# --- (e): zones_only ---------------------------------------------------------------------------

def test_zones_only_ignores_change_outside_the_zone(stills) -> None:
    room, man = stills[EMPTY], stills[STANDING]   # he stands at x 382..676
    hw, grid = room.shape[:2], MotionConfig().grid
    window = zone_blocks([[(0, 0), (150, 0), (150, 432), (0, 432)]], hw, grid)
    table = zone_blocks([[(380, 0), (680, 0), (680, 432), (380, 432)]], hw, grid)
    assert gate_after(room).changed(man)
    assert not gate_after(room, mask=window).changed(man)
    assert gate_after(room, mask=table).changed(man)


def test_zone_blocks_cover_every_block_the_polygon_touches() -> None:
    hw, grid = (432, 768), (36, 64)   # 12x12 pixel blocks
    mask = zone_blocks([[(12, 12), (35, 12), (35, 23), (12, 23)]], hw, grid)
    assert np.array_equal(np.argwhere(mask), [[1, 1], [1, 2]])
    tiny = zone_blocks([[(100.2, 50.1), (100.6, 50.1), (100.4, 50.5)]], hw, grid)
    assert np.array_equal(np.argwhere(tiny), [[4, 8]])   # smaller than a pixel: its block


def test_for_config_masks_the_zones_the_rules_use(workdir: Path) -> None:
    text = GOOD + '\n[motion]\nenabled = true\nzones_only = true\n'
    text += '\n[[zones]]\nname = "unused"\npolygon = [[0, 0], [0.1, 0], [0.1, 0.1]]\n'
    cfg = load_config(write_config(workdir / "device.toml", text))
    gate = MotionGate.for_config(cfg, (432, 768))
    gate_zone = [(0.3 * 768, 0.5 * 432), (0.7 * 768, 0.5 * 432), (0.7 * 768, 432), (0.3 * 768, 432)]
    assert np.array_equal(gate.mask, zone_blocks([gate_zone], (432, 768), cfg.motion.grid))
    with pytest.raises(ConfigError, match=r"motion\.grid.*finer than the source's 32x16 frame"):
        MotionGate.for_config(cfg, (16, 32))


# --- the kernels against their twins, and the bookkeeping ---------------------------------------

@pytest.mark.parametrize("hw,grid", [((432, 768), (36, 64)), ((479, 641), (36, 64)),
                                     ((100, 50), (7, 5)), ((1080, 1920), (36, 64))])
def test_block_means_match_the_numpy_twin(hw, grid) -> None:
    means, _ = kernels()
    rng = np.random.default_rng(hw[0])
    image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    out = np.empty(grid)
    means(image.reshape(hw[0], -1), block_edges(hw[0], grid[0]), block_edges(hw[1], grid[1]),
          np.empty(3 * hw[1], np.uint32), out)
    assert np.array_equal(out, block_means_np(image, grid))


def test_a_frame_that_is_not_contiguous_is_measured_the_same(stills) -> None:
    room = stills[EMPTY]
    wide = np.zeros((room.shape[0], room.shape[1] + 8, 3), np.uint8)
    wide[:, 4:-4] = room
    gate = gate_after(wide[:, 4:-4])
    assert not gate.changed(room) and gate.share == 0.0


def test_the_comparison_kernel_matches_its_twin() -> None:
    _, compare = kernels()
    rng = np.random.default_rng(7)
    scratch = np.empty(36 * 64)
    for case in range(300):
        ref = rng.integers(0, 256, (36, 64)).astype(np.float64)   # whole levels: many ties
        cur = np.clip(ref * rng.uniform(0.8, 1.2) + rng.integers(-30, 31), 0, 255)
        cur += rng.normal(0, rng.choice([0.5, 8.0]), cur.shape)
        y, x = rng.integers(0, 30), rng.integers(0, 58)
        cur[y:y + rng.integers(1, 7), x:x + rng.integers(1, 7)] = rng.integers(0, 256)
        if case % 3 == 0:
            cur = np.round(cur)
        mask = rng.random((36, 64)) < (1.0 if case % 2 else 0.3)
        threshold = float(rng.choice([4.0, 12.0, 30.0]))
        assert compare(cur, ref, mask, threshold, scratch) == \
            changed_blocks_np(cur, ref, mask, threshold), case


def test_due_counts_media_time_from_the_last_inferred_frame() -> None:
    image = np.zeros((36, 64, 3), np.uint8)
    gate = MotionGate(replace(MotionConfig(), force_every_s=1.0), (36, 64))
    assert gate.due(5.0) and gate.changed(image)   # nothing inferred yet
    gate.inferred(image, 5.0)
    assert not gate.due(5.9) and gate.due(6.0) and gate.due(7.5)
    assert gate.due(0.0)   # time went back: a file started again
    assert not gate.changed(image)


def test_a_skipped_frame_is_not_the_reference(stills) -> None:
    """Change creeping in below the threshold frame by frame still adds up to change."""
    room, patch = stills[EMPTY], jacket(stills, (69, 96))
    steps = [room] + [paste(room, patch[:, :k], 300, 100) for k in range(4, 97, 4)]
    for before, after in zip(steps, steps[1:]):   # each step alone is below area_threshold
        assert not gate_after(before).changed(after)
    gate = gate_after(room)
    said = [gate.changed(s) for s in steps[1:]]
    assert not said[0] and said[-1]


def test_changed_allocates_nothing_per_frame(stills) -> None:
    gate = gate_after(stills[EMPTY])
    gate.changed(stills[STANDING])
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(50):
            gate.changed(stills[STANDING])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before < 2048   # a grid is 18 kB, a frame 1 MB


def test_a_frame_of_another_size_is_refused() -> None:
    gate = MotionGate(MotionConfig(), (432, 768))
    with pytest.raises(ValueError, match=r"\(432, 768, 3\) uint8.*\(720, 1280, 3\)"):
        gate.changed(np.zeros((720, 1280, 3), np.uint8))


# --- (f): configuration ------------------------------------------------------------------------

def test_motion_defaults_keep_every_config_valid(workdir: Path) -> None:
    cfg = load_config(write_config(workdir / "device.toml", GOOD))
    assert cfg.motion == MotionConfig() and not cfg.motion.enabled
    text = GOOD + ('\n[motion]\nenabled = true\ngrid = [18, 32]\npixel_threshold = 8\n'
                   'area_threshold = 0.02\nforce_every_s = 2.5\nzones_only = true\n')
    cfg = load_config(write_config(workdir / "device.toml", text))
    assert cfg.motion == MotionConfig(True, (18, 32), 8.0, 0.02, 2.5, True)


MOTION_BAD = [
    ("unknown key", "threshold = 5", "motion.threshold", "spelling"),
    ("enabled not bool", 'enabled = "yes"', "motion.enabled", "true or false"),
    ("grid one number", "grid = [36]", "motion.grid", "list of 2 whole numbers"),
    ("grid too coarse", "grid = [1, 64]", "motion.grid", "at least 2"),
    ("pixel threshold zero", "pixel_threshold = 0", "motion.pixel_threshold", "above 0"),
    ("pixel threshold high", "pixel_threshold = 300", "motion.pixel_threshold", "at most 255"),
    ("area threshold share", "area_threshold = 5", "motion.area_threshold", "at most 1"),
    ("force zero", "force_every_s = 0", "motion.force_every_s", "above 0"),
    ("zones_only, rule without zone", 'zones_only = true\n[[rules]]\nname = "any"\n'
     'action = "stop"', "motion.zones_only", "rules[1]"),
]


@pytest.mark.parametrize("name,text,key,fix", MOTION_BAD, ids=[b[0] for b in MOTION_BAD])
def test_motion_config_errors_name_the_key(workdir: Path, name, text, key, fix) -> None:
    path = write_config(workdir / "device.toml", GOOD + f"\n[motion]\n{text}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and key in msg and fix in msg, msg
    assert "\n" not in msg


def test_check_refuses_a_bad_motion_section_with_exit_2(workdir: Path) -> None:
    path = write_config(workdir / "device.toml", GOOD + "\n[motion]\narea_threshold = -0.1\n")
    proc = edgert("check", str(path))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "motion.area_threshold" in lines[0] and str(path) in lines[0]
