"""What the ``Run`` loop needs from a checkpoint rule: the public contract a new rule implements.

``Run`` drives its rules through these members alone, so a rule other than ``ModelCheckpoint``
(an async or sharded save policy, say) plugs in by implementing them; ``ModelCheckpoint`` is the
reference implementation. A rule decides what to save and delete; it never touches the disk.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from resilient.rules._plan import SavePlan


@runtime_checkable
class CheckpointRule(Protocol):
    """A rule as ``Run`` sees it: its triggers, its plans, and its bookkeeping across restarts."""

    dirpath: str | None
    async_save: bool | None  # write its checkpoints in the background; None: as the run says

    @property
    def identity(self) -> Mapping[str, Any]:
        """Plain JSON that tells this rule apart across restarts (a moved run keeps it)."""
        ...

    @property
    def record(self) -> dict[str, Any]:
        """The rule as events.jsonl shows it: what it saves by, as plain JSON."""
        ...

    @property
    def timed(self) -> bool:
        """Whether `time_due` can ever be true: the run agrees on these rules' timers."""
        ...

    @property
    def weights_only(self) -> bool:
        """Whether its checkpoints hold the model weights alone (not resumable)."""
        ...

    @property
    def epoch_end_on_train(self) -> bool:
        """Whether its epoch trigger fires when the epoch's batches end rather than after the epoch."""
        ...

    def bind(self, default_dirpath: Path, clock: Callable[[], float]) -> None:
        """Attach to a run: its directory (unless the rule has one) and its monotonic clock."""
        ...

    def step_due(self, step: int) -> bool: ...

    def next_step_due(self, step: int) -> int | None:
        """The first step after `step` at which `step_due` is true (None: never).

        ``Run`` asks `step_due` only from that step on, so every step boundary in between costs a
        comparison; it asks again once the step is reached. A rule whose schedule can change
        between steps returns ``step + 1``.
        """
        ...

    def epoch_due(self, epoch: int) -> bool: ...

    def time_due(self) -> bool: ...

    def plan(self, *, step: int, epoch: int, metrics: Mapping[str, float], exists: Callable[[str], bool],
             time_fired: bool) -> SavePlan:
        """Update the bookkeeping for a boundary at which a trigger fired; return the I/O to do."""
        ...

    def forget_failed_save(self, before: dict[str, Any]) -> None:
        """Return to `before` (its `state_dict()` ahead of a save that failed), keeping its timer restarted."""
        ...

    def reconcile(self, existing: Callable[[str], bool]) -> None:
        """After a resume, forget checkpoints that are gone."""
        ...

    def protect(self, path: str) -> None:
        """Never schedule `path` (the checkpoint the run resumed from) for deletion."""
        ...

    def kept_paths(self) -> Collection[str] | None:
        """The checkpoints it still keeps; None when it keeps all it wrote (nothing is an orphan)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
