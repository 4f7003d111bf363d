"""Agreement between the ranks of one job: process-group setup and the few collectives resilient needs."""

from ._agreement import StepAgreement
from ._deadline import Deadline
from ._dist import (
    DistInfo,
    broadcast_object,
    gather_to_main,
    init_distributed,
    shutdown,
    side_group,
)
from ._signals import SignalRecorder

__all__ = [
    "Deadline", "DistInfo", "SignalRecorder", "StepAgreement", "broadcast_object", "gather_to_main", "init_distributed",
    "shutdown", "side_group",
]
