"""The config every bench contender runs: the user's, read every frame, as fast as it comes."""

from __future__ import annotations

import dataclasses

from edgert.config import load_config
from edgert.config.types import Config


def bench_config(config_path: str) -> Config:
    """Every frame, read on demand: a paced live source would only measure the camera's rate."""
    cfg = load_config(config_path)
    return dataclasses.replace(cfg, source=dataclasses.replace(
        cfg.source, mode="every", loop=cfg.source.kind in ("file", "images"), fps=None))
