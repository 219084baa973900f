"""What the model expects (family, input, labels, conf), read the same way `edgert run` reads it."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Mapping

from edgert.config.load import FAMILIES, load_config, model_card
from edgert.config.types import InputConfig, ModelConfig, RuntimeConfig
from edgert.errors import UsageError
from edgert.infer.inputs import describe_input, layered
from edgert.infer.metadata import input_from_metadata

INPUT_KEYS = frozenset(f.name for f in dataclasses.fields(InputConfig)) - {"given"}


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
    elif (card := model_card(model, model.resolve())) is not None:
        model_cfg, runtime = _from_card(model), RuntimeConfig()
        origin = str(card)
    else:
        model_cfg, runtime, origin = ModelConfig(path=model), RuntimeConfig(), "defaults"
    said = {k for k, _ in model_cfg.input.given}
    model_cfg = dataclasses.replace(model_cfg, input=layered(model_cfg.input, metadata or {})[0])
    if input_from_metadata(metadata or {}) is not None and not INPUT_KEYS <= said:
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


def _from_card(model: Path) -> ModelConfig:
    """model.toml through the config loader: a minimal device config that points at MODEL."""
    text = (f'device_id = "quantize"\n[source]\nurl = "pattern:"\n'
            f"[model]\npath = {json.dumps(str(model.absolute()))}\n"
            f'[fail_safe]\naction = "stop"\n')
    with tempfile.TemporaryDirectory(prefix="edgert-quantize-") as tmp:
        device = Path(tmp) / "device.toml"
        device.write_text(text, encoding="utf-8")
        return load_config(device).model
