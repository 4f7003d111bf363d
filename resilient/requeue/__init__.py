"""Whether a stopped job comes back: policy, what each host does, the state it records in the run directory,
and who is told (`Notify`)."""

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
from ._notify import (
    DEFAULT_NOTIFY_ON,
    DEFAULT_NOTIFY_TIMEOUT_S,
    MAX_NOTIFY_TIMEOUT_S,
    NOTIFY_STATES,
    Notify,
    check_notify_timeout,
    check_webhook,
    notify_command,
    notify_states,
)
from ._policy import RequeuePolicy, SetupRefused

__all__ = [
    "DEFAULT_NOTIFY_ON", "DEFAULT_NOTIFY_TIMEOUT_S", "EXIT_CTRL_C", "EXIT_STOPPED", "LOCAL_REQUEUE_EXIT",
    "MAX_NOTIFY_TIMEOUT_S", "NOTIFY_STATES", "SIGNAL_DELAY_ENV", "Cause", "Host", "LocalHost", "Notify", "RequeuePolicy",
    "SetupRefused", "SlurmHost", "check_notify_timeout", "check_webhook", "classify_local", "classify_slurm", "conclude",
    "detect_host", "notify_command", "notify_states",
]
