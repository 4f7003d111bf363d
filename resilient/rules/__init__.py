"""When and what to checkpoint: Lightning's ``ModelCheckpoint`` rules, minus the I/O."""

from resilient.rules._conflicts import RuleConflict, check_rule_set
from resilient.rules._duration import parse_duration
from resilient.rules.model_checkpoint import ModelCheckpoint, SavePlan

__all__ = ["ModelCheckpoint", "RuleConflict", "SavePlan", "check_rule_set", "parse_duration"]
