"""resilient: PyTorch training jobs that survive preemption, time limits and crashes.

The public API is deliberately small; everything else lives in private modules.
"""

from ._version import __version__
from .checkpoint import CheckpointError, CheckpointWriteError
from .loop import ResumableSampler, Run, load_checkpoint
from .rules import ModelCheckpoint
from .rundir import RunDirInUse
from .submission import JobError, JobHandle, job

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
    "JobError",
    "JobHandle",
    "ModelCheckpoint",
    "ResumableSampler",
    "Run",
    "RunDirInUse",
    "__version__",
    "job",
    "load_checkpoint",
]
