"""Whether a stopped job comes back: policy, what each host does, and the state it records in the run directory."""

from . import conclude
from ._cause import Cause, classify_local, classify_slurm
from ._host import (
    EXIT_CTRL_C,
    EXIT_STOPPED,
    LOCAL_REQUEUE_EXIT,
    SIGNAL_DELAY_ENV,
    Host,
    LocalHost,
    SlurmHost,
    detect_host,
)
from ._policy import RequeuePolicy, SetupRefused

__all__ = [
    "EXIT_CTRL_C", "EXIT_STOPPED", "LOCAL_REQUEUE_EXIT", "SIGNAL_DELAY_ENV", "Cause", "Host", "LocalHost", "SlurmHost",
    "RequeuePolicy", "SetupRefused", "classify_local", "classify_slurm", "conclude", "detect_host",
]
