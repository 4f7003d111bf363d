"""Whether a stopped job comes back: policy, what each host does, and the state it records in the run directory."""

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

__all__ = [
    "EXIT_CTRL_C", "EXIT_STOPPED", "LOCAL_REQUEUE_EXIT", "SIGNAL_DELAY_ENV", "Cause", "Host", "LocalHost", "SlurmHost",
    "classify_local", "classify_slurm", "detect_host",
]
