"""The training loop: `Run`, resumable data order, and loading checkpoints back."""

from ._boundary import StopFlags
from ._rng import capture_rng, restore_rng
from ._saving import OnSaveError
from ._session import RunStopped
from .load import load_checkpoint
from .run import Run, schedule_fire_drill
from .sampler import ResumableSampler

__all__ = ["OnSaveError", "ResumableSampler", "Run", "RunStopped", "StopFlags", "capture_rng", "load_checkpoint",
           "restore_rng", "schedule_fire_drill"]
