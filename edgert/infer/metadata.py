"""What a model file's metadata says about its input, so a config need not repeat it."""

from __future__ import annotations

import ast
import dataclasses
from typing import Mapping

from edgert.config.types import InputConfig

# Ultralytics' own predictors (ultralytics/data/augment.py): RGB, 0..1, and for detection,
# segmentation, pose and OBB a centred letterbox padded with grey 114; classifiers resize the
# shorter side to the input size and take the centre (crop fraction 1), mean 0, std 1.
_ULTRALYTICS = InputConfig(resize="letterbox", color="rgb", scale=1.0 / 255.0, pad_value=114,
                           align="center")
_ULTRALYTICS_CLASSIFY = InputConfig(resize="center_crop", color="rgb", scale=1.0 / 255.0,
                                    crop_fraction=1.0)


def is_ultralytics(metadata: Mapping[str, str]) -> bool:
    """An Ultralytics export says so in `author` ("Ultralytics") or `description`."""
    said = f"{metadata.get('author', '')} {metadata.get('description', '')}".lower()
    return "ultralytics" in said


def input_from_metadata(metadata: Mapping[str, str]) -> InputConfig | None:
    """The input the model was trained on, from its metadata_props; None when they do not say.

    Only Ultralytics exports say enough today (their preprocessing is fixed by the library);
    `imgsz` ("[640, 640]", height first, or one number) gives the size. A config or
    model.toml key always wins over what this returns.
    """
    if not is_ultralytics(metadata):
        return None
    base = _ULTRALYTICS_CLASSIFY if metadata.get("task") == "classify" else _ULTRALYTICS
    size = _imgsz(metadata.get("imgsz", ""))
    return base if size is None else dataclasses.replace(base, size=size)


def _imgsz(raw: str) -> tuple[int, int] | None:
    try:
        value = ast.literal_eval(raw) if raw else None
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, int) and value > 0:
        return value, value
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and v > 0 for v in value)):
        return int(value[0]), int(value[1])
    return None

