"""The training loop: `Run`, resumable data order, and loading checkpoints back."""

from .load import load_checkpoint
from .run import Run
from .sampler import ResumableSampler

__all__ = ["ResumableSampler", "Run", "load_checkpoint"]
