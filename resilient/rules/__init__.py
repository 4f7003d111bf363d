"""When and what to checkpoint: Lightning's ``ModelCheckpoint`` rules, minus the I/O."""

from resilient.rules._conflicts import RuleConflict, check_rule_set
from resilient.rules._contract import CheckpointRule
from resilient.rules._duration import parse_duration
from resilient.rules._identity import identity_key, same_rule, saved_state
from resilient.rules._interval import IntervalTimer
from resilient.rules._rule_list import rule_list
from resilient.rules.model_checkpoint import ModelCheckpoint, SavePlan

__all__ = [
    "CheckpointRule",
    "IntervalTimer",
    "ModelCheckpoint",
    "RuleConflict",
    "SavePlan",
    "check_rule_set",
    "identity_key",
    "parse_duration",
    "rule_list",
    "same_rule",
    "saved_state",
]
