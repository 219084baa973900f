"""The model's input as edgert feeds it, and who said so: config, model.toml, metadata, the file.

A user who sets nothing must still get the preprocessing the model was trained with where the
file says it (Ultralytics metadata), and must be able to see where each part came from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from edgert.config.types import InputConfig
from edgert.errors import ModelError
from edgert.infer.metadata import input_from_metadata

Shape = tuple["int | None", ...]
DEFAULTS = "edgert's defaults"
METADATA = "the model's Ultralytics metadata"


@dataclass(frozen=True, slots=True)
class InputPlan:
    """How frames become this model's input tensor."""

    input: InputConfig       # resolved: `size` is `hw`, `layout` is set
    hw: tuple[int, int]
    origin: str              # where the description came from, for the ready line and check
    dims: tuple[int, int, int, int]   # the tensor fed: one frame, in the model's layout
    # The key that makes the tensor differ from fixed dims the file declares (its size, or
    # model.path for a fixed batch above 1), so the model's input must be rewritten; else None.
    rewrite_key: str | None = None

    def describe(self) -> str:
        h, w = self.hw
        return f"{h}x{w} {self.input.layout}, {describe_input(self.input)}"


def detect_layout(shape: Shape) -> str:
    """Channels last where the file leaves no doubt: the last dim 3 (or 1) and the second not."""
    return "nhwc" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "nchw"


def layered(cfg: InputConfig, metadata: Mapping[str, str]) -> tuple[InputConfig, str]:
    """The keys the config or model.toml set, over what the metadata says, over the defaults;
    and a sentence saying which came from where."""
    given = dict(cfg.given)
    hint = input_from_metadata(metadata)
    rest = DEFAULTS if hint is None else METADATA
    if hint is not None:
        cfg = dataclasses.replace(hint, given=cfg.given,
                                  **{k: getattr(cfg, k) for k in given})
    by: dict[str, list[str]] = {}
    for key, where in sorted(given.items()):
        by.setdefault(where, []).append(key)
    said = [f"{', '.join(keys)} from {where}" for where, keys in by.items()]
    if not said:
        return cfg, f"from {rest}"
    return cfg, "; ".join(said) + f"; the rest from {rest}"


def plan_input(model: InputConfig, path: Path, shape: Shape, metadata: Mapping[str, str],
               where: str, key: str = "model") -> InputPlan:
    """The input for a model file whose input has `shape`; ModelError naming `where` and the
    key when neither the file nor anyone else says its size. `key` is "model" or the ladder
    rung's "runtime.ladder.rungs[i]"."""
    size_key = "model.input.size" if key == "model" else f"{key}.size"
    cfg, origin = layered(model, metadata)
    layout = _layout(cfg.layout, path, shape, where)
    h, w = (shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2])
    static = (h, w) if isinstance(h, int) and isinstance(w, int) else None
    wanted = cfg.size if "size" in dict(cfg.given) else None
    # A size said wins over the file's fixed one (edgert.infer.reshape rewrites the file's);
    # the metadata's imgsz (or a rung's inherited size) serves only a dynamic input.
    size = wanted or static or cfg.size
    if size is None:
        raise ModelError(f"{where}: {size_key} is missing and {path} has a dynamic input "
                         f"shape; set {size_key} = [height, width]")
    hw = (int(size[0]), int(size[1]))
    dims = (1, 3, *hw) if layout == "nchw" else (1, *hw, 3)
    fixed_hw = [(d, want) for d, want in zip((h, w), hw) if isinstance(d, int)]
    rewrite = (size_key if any(d != want for d, want in fixed_hw) else
               f"{key}.path" if isinstance(shape[0], int) and shape[0] != 1 else None)
    return InputPlan(dataclasses.replace(cfg, size=hw, layout=layout), hw, origin, dims, rewrite)


def _layout(said: str | None, path: Path, shape: Shape, where: str) -> str:
    """The layout said (and checked against the file's channel dim), else the file's own."""
    layout = said or detect_layout(shape)
    channels, other = (shape[1], shape[3]) if layout == "nchw" else (shape[3], shape[1])
    if channels is None or channels == 3:
        return layout
    flip = "nhwc" if layout == "nchw" else "nchw"
    if said and other == 3:
        raise ModelError(f"{where}: model.input.layout is {said!r} but {path} takes "
                         f"{list(shape)}, channels {'last' if flip == 'nhwc' else 'first'}; "
                         f'set layout = "{flip}" or remove it')
    maybe = f' (or set model.input.layout = "{flip}")' if other == 3 else ""
    raise ModelError(f"{where}: model.input: {path} takes {channels}-channel images "
                     f"({list(shape)}, read as {layout}), but edgert feeds 3-channel colour "
                     f"frames; export the model for 3 channels{maybe}")


def describe_input(cfg: InputConfig) -> str:
    """"rgb, ×1/255, letterbox, pad 114": the keys that change what the model sees."""
    scale = f"×1/{1 / cfg.scale:.4g}" if cfg.scale < 1 else f"×{cfg.scale:g}"
    parts = [cfg.color, scale, cfg.resize]
    if cfg.resize == "letterbox":
        parts.append(f"pad {cfg.pad_value}" + (", top-left" if cfg.align == "top_left" else ""))
    if cfg.mean != (0.0, 0.0, 0.0) or cfg.std != (1.0, 1.0, 1.0):
        parts.append(f"mean {list(cfg.mean)} std {list(cfg.std)}")
    return ", ".join(parts)
