"""Decide: detections to the action an actuator should take, by zone and rule."""

from edgert.decide.events import EventDraft
from edgert.decide.rules import Outcome, RuleEngine

__all__ = ["EventDraft", "Outcome", "RuleEngine"]
