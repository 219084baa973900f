"""Configuration: one TOML file per device, validated once into frozen values."""

from edgert.config.load import load_config
from edgert.config.types import (Config, FailSafeConfig, InputConfig, Line, ModelConfig,
                                 MotionConfig, OutputConfig, Rule, RuntimeConfig, SerialConfig,
                                 SourceConfig, Zone)

__all__ = ["load_config", "Config", "FailSafeConfig", "InputConfig", "Line", "ModelConfig",
           "MotionConfig", "OutputConfig", "Rule", "RuntimeConfig", "SerialConfig",
           "SourceConfig", "Zone"]
