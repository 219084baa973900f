"""One source's state across its frames: rules, tracks, the motion reference — never shared with another source."""

from __future__ import annotations

from dataclasses import dataclass

from edgert.config.types import Config
from edgert.decide import RuleEngine
from edgert.frame import Detections, Frame
from edgert.preprocess.motion import MotionGate


@dataclass(eq=False)
class Scene:
    """What a source's frames share, so two cameras in one process decide exactly as each
    would alone: its own rules (debounce, tracks, open events), the motion gate's reference
    frame and the detections an unchanged frame reuses, and its event numbering. The model,
    the ladder and the learned costs are the process's."""

    id: str
    cfg: Config                      # the config as this source sees it (Config.for_source)
    rules: RuleEngine
    record_id: str | None = None     # its `source_id` in records and topics ([[sources]])
    gate: MotionGate | None = None   # [motion]: made at warm-up, at this source's frame size
    last: Detections | None = None   # what the gate lets an unchanged frame reuse
    last_frame: Frame | None = None  # the last frame decided: its media time ends open events
    event_seq: int = 0
    reused: int = 0                  # frames the gate let skip the model
    hw: tuple[int, int] | None = None   # the frame size it was warmed up at

    @classmethod
    def build(cls, cfg: Config, source_id: str) -> Scene:
        mine = cfg.for_source(source_id)
        return cls(source_id, mine, rule_engine(mine),
                   source_id if cfg.named_sources else None)

    @classmethod
    def scratch(cls, cfg: Config) -> Scene:
        """For warm-up frames: rules of their own, so no real state moves."""
        return cls("warm-up", cfg, rule_engine(cfg))

    def motion(self, hw: tuple[int, int]) -> None:
        """A motion gate at this frame size (or none, with [motion] off), made and compiled
        now: never on a frame's time."""
        self.hw = hw
        self.last = None
        if not self.cfg.motion.enabled:
            self.gate = None
            return
        self.gate = MotionGate.for_config(self.cfg, hw)
        self.gate.warm_up()


def rule_engine(cfg: Config) -> RuleEngine:
    return RuleEngine(cfg.rules, cfg.zones, cfg.lines, cfg.tracker, cfg.runtime.kernels)
