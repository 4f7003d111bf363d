"""resilient: PyTorch training jobs that survive preemption, time limits and crashes.

The public API is deliberately small; everything else lives in private modules. Its names are
imported when first used (`_lazy.py`), so that `import resilient` and the `resilient` command's
light commands do not import torch.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._version import __version__

if TYPE_CHECKING:
    from .checkpoint import CheckpointError, CheckpointWriteError
    from .loop import ResumableSampler, Run, load_checkpoint
    from .requeue import Notify
    from .rules import ModelCheckpoint
    from .rundir import RunDirInUse
    from .submission import JobError, JobHandle, job

__getattr__, __dir__ = lazy_exports(__name__, {
    ".checkpoint": ("CheckpointError", "CheckpointWriteError"),
    ".loop": ("ResumableSampler", "Run", "load_checkpoint"),
    ".requeue": ("Notify",),
    ".rules": ("ModelCheckpoint",),
    ".rundir": ("RunDirInUse",),
    ".submission": ("JobError", "JobHandle", "job"),
})

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
    "JobError",
    "JobHandle",
    "ModelCheckpoint",
    "Notify",
    "ResumableSampler",
    "Run",
    "RunDirInUse",
    "__version__",
    "job",
    "load_checkpoint",
]
