"""resilient: PyTorch training jobs that survive preemption, time limits and crashes.

The public API is deliberately small; everything else lives in private modules.
"""

from ._version import __version__
from .checkpoint import CheckpointError
from .loop import ResumableSampler, Run, load_checkpoint
from .rules import ModelCheckpoint

__all__ = ["CheckpointError", "ModelCheckpoint", "ResumableSampler", "Run", "__version__", "load_checkpoint"]
