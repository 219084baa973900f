"""What the model expects (family, input, labels, conf), read the same way `edgert run` reads it."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Mapping

from edgert.config.load import FAMILIES, MODEL_CARD, load_config, model_card
from edgert.config.types import InputConfig, ModelConfig, RuntimeConfig
from edgert.errors import UsageError
from edgert.infer.metadata import input_from_metadata

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

INPUT_KEYS = frozenset(f.name for f in dataclasses.fields(InputConfig))


def describe(model: Path, config: Path | None = None, family: str | None = None,
             metadata: Mapping[str, str] | None = None
             ) -> tuple[ModelConfig, RuntimeConfig, str]:
    """(model config, runtime config, where it came from) for MODEL.

    From a device config when given, else from a model.toml beside MODEL, else defaults;
    `family` overrides either. The input is layered key by key: defaults, then what the
    model's `metadata` says (`input_from_metadata`), then model.toml, then the device config.
    The runtime config supplies thread settings for timing.
    """
    if config is not None:
        cfg = load_config(config)
        model_cfg, runtime, origin = cfg.model, cfg.runtime, str(config)
        said = _input_keys(config) | _input_keys(cfg.model.path.with_name(MODEL_CARD))
    elif (card := model_card(model, model.resolve())) is not None:
        model_cfg, runtime = _from_card(model), RuntimeConfig()
        origin = str(card)
        said = _input_keys(card)
    else:
        model_cfg, runtime, origin = ModelConfig(path=model), RuntimeConfig(), "defaults"
        said = frozenset()
    hint = input_from_metadata(metadata or {})
    if hint is not None and not INPUT_KEYS <= said:
        given = {k: getattr(model_cfg.input, k) for k in said & INPUT_KEYS}
        model_cfg = dataclasses.replace(model_cfg, input=dataclasses.replace(hint, **given))
        meta = f"the model's Ultralytics metadata (input: {describe_input(model_cfg.input)})"
        origin = meta if origin == "defaults" else f"{origin} over {meta}"
    model_cfg = dataclasses.replace(model_cfg, path=model)
    if family is not None:
        if family not in FAMILIES and ":" not in family:
            raise UsageError(f"--family {family!r} is not a model family; use one of "
                             + ", ".join(FAMILIES) + ' or "package.module:function"')
        model_cfg = dataclasses.replace(model_cfg, family=family)
    # Timing is on the CPU: that is what the QDQ model is fused for here.
    return model_cfg, dataclasses.replace(runtime, providers=("cpu",)), origin


def describe_input(cfg: InputConfig) -> str:
    """"rgb, ×1/255, letterbox, pad 114": the keys that change what the model sees."""
    scale = f"×1/{1 / cfg.scale:.4g}" if cfg.scale < 1 else f"×{cfg.scale:g}"
    parts = [cfg.color, scale, cfg.resize]
    if cfg.resize == "letterbox":
        parts.append(f"pad {cfg.pad_value}" + (", top-left" if cfg.align == "top_left" else ""))
    if cfg.mean != (0.0, 0.0, 0.0) or cfg.std != (1.0, 1.0, 1.0):
        parts.append(f"mean {list(cfg.mean)} std {list(cfg.std)}")
    return ", ".join(parts)


def _input_keys(file: Path) -> frozenset[str]:
    """The [model.input] keys FILE sets (the config loader has already validated it)."""
    if not file.is_file():
        return frozenset()
    table = tomllib.loads(file.read_text(encoding="utf-8")).get("model", {})
    given = table.get("input", {}) if isinstance(table, dict) else {}
    return frozenset(given) if isinstance(given, dict) else frozenset()


def _from_card(model: Path) -> ModelConfig:
    """model.toml through the config loader: a minimal device config that points at MODEL."""
    text = (f'device_id = "quantize"\n[source]\nurl = "pattern:"\n'
            f"[model]\npath = {json.dumps(str(model.absolute()))}\n"
            f'[fail_safe]\naction = "stop"\n')
    with tempfile.TemporaryDirectory(prefix="edgert-quantize-") as tmp:
        device = Path(tmp) / "device.toml"
        device.write_text(text, encoding="utf-8")
        return load_config(device).model
