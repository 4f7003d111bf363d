"""Lightning's ``ModelCheckpoint`` rules as pure bookkeeping.

The rule decides *what* to save and delete; the ``Run`` loop decides *when* to ask (it
evaluates the triggers at step and epoch boundaries, through the public ``CheckpointRule``
contract this class implements) and does the I/O through the atomic checkpoint store. Keeping all file system effects out of this class is what makes it
testable without disk and safe with several ranks: only rank 0 plans, the others receive
``state_dict()``, so the bookkeeping cannot diverge between ranks.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Collection, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from resilient.rules import _ranking
from resilient.rules._checks import (
    check_bool,
    check_count,
    check_dirpath,
    check_filename,
    check_mode,
    check_monitor,
    check_optional_bool,
    check_optional_count,
    check_save_last,
)
from resilient.rules._duration import parse_duration
from resilient.rules._filename import check_component, check_template, expand, fit
from resilient.rules._interval import IntervalTimer
from resilient.rules._plan import PlanBuilder, SavePlan

__all__ = ["ModelCheckpoint", "SavePlan"]

log = logging.getLogger("resilient")


class ModelCheckpoint:
    """Save checkpoints periodically and keep the best ``save_top_k`` by a monitored metric.

    Parameters, defaults and file names are those of Lightning 2.x ``ModelCheckpoint``; see its
    documentation. Scores are stored as plain Python floats (Lightning keeps tensors) because
    the bookkeeping travels inside checkpoints loaded with ``torch.load(weights_only=True)``.

    One parameter Lightning has not: ``async_save`` (None: as the `Run` says, which is on by
    default) writes this rule's checkpoints in the background after copying the state to host
    memory; False writes them before training goes on.

    Deliberate differences from Lightning, each fixing a documented Lightning problem:

    - ``every_n_train_steps``, ``every_n_epochs`` and ``train_time_interval`` may be combined;
      a save happens when any of them fires (Lightning requires one rule per trigger).
    - The time since the last time-based save survives preemption (Lightning restarts the
      interval on resume, so a job preempted more often than the interval never saves).
    - Paths in ``state_dict()`` are relative to ``dirpath``: a moved run directory resumes
      with its top-k intact instead of orphaning the files.
    - A NaN score is kept as NaN, is evicted first and is never ``best_model_path``.
    - ``train_time_interval`` also accepts strings such as ``"30m"`` or ``"1h30m"``.
    - A "/" in an auto-inserted metric name becomes "_" ("val/loss" -> "val_loss=0.50.ckpt"),
      and a name that would leave ``dirpath`` is refused instead of creating directories.
    - ``save_last="link"`` links only to a top-k checkpoint of this rule; before the first one
      exists, ``last`` is written as a file (Lightning could link ``last`` to itself).
    - A file written at this boundary, or the checkpoint the run resumed from, is never
      scheduled for deletion.
    """

    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | Literal["link"] | None = None,
        save_top_k: int = 1,
        save_weights_only: bool = False,
        mode: Literal["min", "max"] = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | str | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
        async_save: bool | None = None,
    ) -> None:
        checked_dirpath = check_dirpath(dirpath)
        self.dirpath: str | None = None if checked_dirpath is None else _resolve(checked_dirpath)
        self.monitor = check_monitor(monitor)
        self.verbose = check_bool(verbose, "verbose")
        self.save_last = check_save_last(save_last)
        self.save_top_k = check_count(save_top_k, "save_top_k", minimum=-1)
        self.save_weights_only = check_bool(save_weights_only, "save_weights_only")
        self.mode = check_mode(mode)
        self.auto_insert_metric_name = check_bool(
            auto_insert_metric_name, "auto_insert_metric_name"
        )
        self.save_on_train_epoch_end = check_optional_bool(
            save_on_train_epoch_end, "save_on_train_epoch_end"
        )
        self.enable_version_counter = check_bool(enable_version_counter, "enable_version_counter")
        self.async_save = check_optional_bool(async_save, "async_save")
        if self.monitor is None and self.save_top_k not in (-1, 0, 1):
            raise ValueError(
                f"save_top_k={self.save_top_k} needs a monitor: with monitor=None there is no "
                "quantity to rank by, so save_top_k must be -1 (all), 0 (none) or 1 (latest)"
            )
        self.filename = check_filename(filename)
        check_template(
            self.filename or self._default_template(),
            auto_insert_metric_name=self.auto_insert_metric_name,
            equals=self.CHECKPOINT_EQUALS_CHAR,
            extension=self.FILE_EXTENSION,
        )

        steps = check_optional_count(every_n_train_steps, "every_n_train_steps", minimum=0)
        epochs = check_optional_count(every_n_epochs, "every_n_epochs", minimum=0)
        interval = (
            None
            if train_time_interval is None
            else parse_duration(train_time_interval, name="train_time_interval")
        )
        if steps is None and epochs is None and interval is None:
            epochs = 1  # Lightning's default: save at the end of every epoch
        self.every_n_train_steps: int = steps or 0
        self.every_n_epochs: int = epochs or 0
        self._timer = IntervalTimer(interval)

        self.best_k_models: dict[str, float] = {}
        self.best_model_path = ""
        self.best_model_score: float | None = None
        self.kth_best_model_path = ""
        self.kth_value: float = _ranking.worst_score(self.mode)
        self.last_model_path = ""
        self.current_score: float | None = None
        self._protected: str | None = None  # the checkpoint the run resumed from: never deleted
        self._last_topk_saved = ""
        self._last_global_step_saved = 0  # Lightning's: nothing to save before the first step
        self._warned_missing_monitor = False

    @property
    def train_time_interval(self) -> timedelta | None:
        return self._timer.interval

    # ---------------------------------------------------------------- file names

    def _default_template(self) -> str:
        return "{epoch}" + self.CHECKPOINT_JOIN_CHAR + "{step}"

    def format_checkpoint_name(
        self,
        metrics: Mapping[str, float | int],
        filename: str | None = None,
        ver: int | None = None,
    ) -> str:
        """The checkpoint path for ``metrics``, byte for byte as Lightning names it.

        ``filename`` overrides the template (``"last"`` gives ``last.ckpt``); ``ver`` appends
        ``-v{ver}``. A name too long for the file system is shortened, with a warning. Raises
        ``ValueError`` naming ``filename`` when the name would leave ``dirpath``.
        """
        template = filename or self.filename or self._default_template()
        name = fit(expand(
            template,
            metrics,
            auto_insert_metric_name=self.auto_insert_metric_name,
            equals=self.CHECKPOINT_EQUALS_CHAR,
        ))
        if ver is not None:
            name = self.CHECKPOINT_JOIN_CHAR.join((name, f"v{ver}"))
        name += self.FILE_EXTENSION
        check_component(name, template=template)
        return os.path.join(self.dirpath, name) if self.dirpath else name

    def _free_path(
        self,
        candidates: Mapping[str, float | int],
        plan: PlanBuilder,
        *,
        replaces: str,
        template: str | None = None,
    ) -> str:
        """Lightning's version counter: skip existing names except the one being replaced."""
        path = self.format_checkpoint_name(candidates, template)
        if self.enable_version_counter:
            version = self.STARTING_VERSION
            while plan.exists(path) and path != replaces:
                path = self.format_checkpoint_name(candidates, template, ver=version)
                version += 1
        return path

    # ---------------------------------------------------------------- Run interface

    def bind(self, default_dirpath: Path, clock: Callable[[], float]) -> None:
        """Attach the rule to a run: its directory (unless given) and its monotonic clock.

        The clock is injected so that tests drive time explicitly and so that every rule of a
        run measures intervals on the same clock.
        """
        if self.dirpath is None:
            self.dirpath = _resolve(default_dirpath)
        self._timer.bind(clock)

    @property
    def identity(self) -> dict[str, Any]:
        """Identity of this rule across restarts (Lightning's ``state_key`` plus ``filename``).

        ``dirpath`` is left out on purpose so that a moved run directory still restores.
        """
        interval = self.train_time_interval
        return {
            "kind": type(self).__qualname__,
            "monitor": self.monitor,
            "mode": self.mode,
            "every_n_train_steps": self.every_n_train_steps,
            "every_n_epochs": self.every_n_epochs,
            "train_time_interval_s": None if interval is None else interval.total_seconds(),
            "filename": self.filename,
        }

    @property
    def record(self) -> dict[str, Any]:
        """The rule as events.jsonl shows it: what it saves by, as plain JSON."""
        interval = self.train_time_interval
        return {
            "kind": type(self).__name__,
            "monitor": self.monitor,
            "mode": self.mode,
            "save_top_k": self.save_top_k,
            "every_n_train_steps": self.every_n_train_steps or None,
            "every_n_epochs": self.every_n_epochs or None,
            "train_time_interval_s": interval.total_seconds() if interval is not None else None,
            "filename": self.filename,
            "dirpath": self.dirpath,
        }

    def step_due(self, step: int) -> bool:
        """``step`` counts optimizer steps completed, i.e. it is read after the batch."""
        return self.every_n_train_steps >= 1 and step % self.every_n_train_steps == 0

    def next_step_due(self, step: int) -> int | None:
        """The next multiple of ``every_n_train_steps`` after ``step``; the interval never changes."""
        every = self.every_n_train_steps
        return (step // every + 1) * every if every >= 1 else None

    def epoch_due(self, epoch: int) -> bool:
        """``epoch`` is zero-based and just finished, hence ``epoch + 1``."""
        return self.every_n_epochs >= 1 and (epoch + 1) % self.every_n_epochs == 0

    def time_due(self) -> bool:
        """Whether ``train_time_interval`` has elapsed; only ``plan(time_fired=True)`` resets."""
        return self._timer.due()

    @property
    def timed(self) -> bool:
        return self.train_time_interval is not None

    @property
    def weights_only(self) -> bool:
        return self.save_weights_only

    @property
    def epoch_end_on_train(self) -> bool:
        return self.save_on_train_epoch_end is True

    def protect(self, path: str) -> None:
        """Never schedule `path` for deletion (Run protects the checkpoint it resumed from)."""
        self._protected = path

    def kept_paths(self) -> Collection[str] | None:
        """The top-k, best and last checkpoints; None with ``save_top_k=-1``, which keeps all."""
        if self.save_top_k == -1:
            return None
        return [path for path in (*self.best_k_models, self.best_model_path, self.last_model_path) if path]

    def plan(
        self,
        *,
        step: int,
        epoch: int,
        metrics: Mapping[str, float],
        exists: Callable[[str], bool],
        time_fired: bool,
    ) -> SavePlan:
        """Update the bookkeeping for a boundary at which a trigger fired; return the I/O to do.

        Mirrors Lightning's ``_save_topk_checkpoint`` followed by ``_save_last_checkpoint``.
        The bookkeeping is updated before anything is written, so the checkpoint written
        contains its own entry. As in Lightning, nothing is planned when this rule already saved
        at ``step`` (e.g. an epoch end right after a step-triggered save), and then the timer
        is not reset either.
        """
        if not self._timer.bound:
            raise RuntimeError("ModelCheckpoint.plan called before bind")
        if step == self._last_global_step_saved:
            return SavePlan()
        if time_fired:
            self._timer.restart()
        candidates: dict[str, Any] = dict(metrics)
        # Lightning casts these: a logged "epoch" arrives as a float.
        candidates["epoch"] = int(candidates.get("epoch", epoch))
        candidates["step"] = int(candidates.get("step", step))
        plan = PlanBuilder(exists)
        self._plan_top_k(candidates, plan)
        self._plan_last(candidates, plan)
        result = plan.build()
        if result.save:
            self._last_global_step_saved = step
        return result

    def forget_failed_save(self, before: dict[str, Any]) -> None:
        """Return to `before` (``state_dict()`` ahead of a save that failed), keeping the timer.

        Otherwise a time rule would be due again at the very next step, retrying a full disk at
        every step; and the rule would name a checkpoint that does not exist.
        """
        self.load_state_dict({**before, "seconds_since_time_save": self._timer.elapsed()})

    def _plan_top_k(self, candidates: Mapping[str, Any], plan: PlanBuilder) -> None:
        if self.save_top_k == 0:
            return
        if self.monitor is None:
            self._plan_latest(candidates, plan)
            return
        if self.monitor not in candidates:
            self._warn_missing_monitor(candidates)
            return
        current = float(candidates[self.monitor])
        if self._qualifies(current):
            self._plan_best(current, candidates, plan)
        elif self.verbose:
            log.info(
                f"Epoch {candidates['epoch']:d}, global step {candidates['step']:d}: "
                f"{self.monitor!r} was not in top {self.save_top_k}"
            )

    def _qualifies(self, current: float) -> bool:
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        return _ranking.improves(current, self.best_k_models[self.kth_best_model_path], self.mode)

    def _plan_best(self, current: float, candidates: Mapping[str, Any], plan: PlanBuilder) -> None:
        """Lightning's ``_update_best_and_save``, with NaN ranked as the worst score."""
        k = len(self.best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k
        evicted = ""
        if len(self.best_k_models) == k:
            evicted = self.kth_best_model_path
            del self.best_k_models[evicted]
        path = self._free_path(candidates, plan, replaces=evicted)
        self.current_score = current
        self.best_k_models[path] = current
        if len(self.best_k_models) == k:
            self._update_kth()
        self._update_best()
        if self.verbose:
            best = math.nan if self.best_model_score is None else self.best_model_score
            log.info(
                f"Epoch {candidates['epoch']:d}, global step {candidates['step']:d}: "
                f"{self.monitor!r} reached {current:0.5f} (best {best:0.5f}), "
                f"saving model to {path!r} as top {k}"
            )
        plan.save(path)
        self._last_topk_saved = path
        if evicted and self._removable(evicted, path):
            plan.remove(evicted)

    def _plan_latest(self, candidates: Mapping[str, Any], plan: PlanBuilder) -> None:
        """Lightning's ``_save_none_monitor_checkpoint``: no metric, so keep the newest."""
        path = self._free_path(candidates, plan, replaces=self.best_model_path)
        previous, self.best_model_path = self.best_model_path, path
        plan.save(path)
        self._last_topk_saved = path
        if self.save_top_k == 1 and previous and self._removable(previous, path):
            plan.remove(previous)

    def _plan_last(self, candidates: Mapping[str, Any], plan: PlanBuilder) -> None:
        """Lightning's ``_save_last_checkpoint``."""
        if not self.save_last:
            return
        path = self._free_path(
            candidates, plan, replaces=self.last_model_path, template=self.CHECKPOINT_NAME_LAST
        )
        previous, self.last_model_path = self.last_model_path, path
        target = self._last_topk_saved
        if self.save_last == "link" and self.save_top_k != 0 and target and target != path:
            plan.link(path, target)
        else:
            plan.save(path)
        if previous and self._removable(previous, path):
            plan.remove(previous)

    def _removable(self, previous: str, current: str) -> bool:
        """Lightning's ``_should_remove_checkpoint``: never the resumed-from checkpoint, never
        anything outside ``dirpath``."""
        if previous == current:
            return False
        candidate = _canonical(previous)
        if self._protected is not None and candidate == _canonical(self._protected):
            return False
        assert self.dirpath is not None
        return Path(_canonical(self.dirpath)) in Path(candidate).parents

    def _warn_missing_monitor(self, candidates: Mapping[str, Any]) -> None:
        if self._warned_missing_monitor:
            return
        self._warned_missing_monitor = True
        warnings.warn(
            f"`ModelCheckpoint(monitor={self.monitor!r})` could not find the monitored key in the"
            f" returned metrics: {list(candidates)}."
            f" HINT: Did you call `run.log({self.monitor!r}, value)`?",
            UserWarning,
            stacklevel=2,
        )

    def _update_kth(self) -> None:
        if self.best_k_models:
            self.kth_best_model_path = _ranking.worst(self.best_k_models, self.mode)
            self.kth_value = self.best_k_models[self.kth_best_model_path]
        else:
            self.kth_best_model_path = ""
            self.kth_value = _ranking.worst_score(self.mode)

    def _update_best(self) -> None:
        self.best_model_path = _ranking.best(self.best_k_models, self.mode)
        self.best_model_score = (
            self.best_k_models[self.best_model_path] if self.best_model_path else None
        )

    # ---------------------------------------------------------------- persistence

    def state_dict(self) -> dict[str, Any]:
        """Bookkeeping to store in each checkpoint, as plain Python types.

        Paths are relative to ``dirpath`` so a moved run directory still resumes. Top-k
        entries are a list of pairs because their order breaks ties and must not depend on
        how a serializer treats dicts. The time-trigger state is the time elapsed since the
        last time-based save, which stays meaningful across machines and clocks.
        """
        return {
            "best_k_models": [[self._to_state(p), s] for p, s in self.best_k_models.items()],
            "best_model_path": self._to_state(self.best_model_path),
            "best_model_score": self.best_model_score,
            "kth_best_model_path": self._to_state(self.kth_best_model_path),
            "kth_value": self.kth_value,
            "last_model_path": self._to_state(self.last_model_path),
            "current_score": self.current_score,
            "last_topk_saved": self._to_state(self._last_topk_saved),
            "last_global_step_saved": self._last_global_step_saved,
            "warned_missing_monitor": self._warned_missing_monitor,
            "seconds_since_time_save": self._timer.elapsed(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned, against the current ``dirpath``."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict from state_dict(), got {type(state).__name__}")
        missing = sorted(self.state_dict().keys() - state.keys())
        if missing:
            raise ValueError(f"state is not a ModelCheckpoint state_dict: missing keys {missing}")
        self.best_k_models = {self._from_state(p): float(s) for p, s in state["best_k_models"]}
        self.best_model_path = self._from_state(state["best_model_path"])
        self.best_model_score = state["best_model_score"]
        self.kth_best_model_path = self._from_state(state["kth_best_model_path"])
        self.kth_value = state["kth_value"]
        self.last_model_path = self._from_state(state["last_model_path"])
        self.current_score = state["current_score"]
        self._last_topk_saved = self._from_state(state["last_topk_saved"])
        self._last_global_step_saved = state["last_global_step_saved"]
        self._warned_missing_monitor = state["warned_missing_monitor"]
        self._timer.resume(state["seconds_since_time_save"])

    def reconcile(self, existing: Callable[[str], bool]) -> None:
        """Forget checkpoints that are gone after a resume.

        A crash between committing a checkpoint and deleting the one it displaced, or another
        rule's save at the same boundary that never committed, leaves bookkeeping that names
        files which do not exist; keeping them would let ghosts hold top-k slots forever.
        """
        gone = [path for path in self.best_k_models if not existing(path)]
        for path in gone:
            del self.best_k_models[path]
        if gone:
            # With fewer than k entries Lightning never reads the kth, so recomputing it from
            # what is left is equivalent to any history that led here.
            self._update_kth()
            self._update_best()
        if self.monitor is None and self.best_model_path and not existing(self.best_model_path):
            self.best_model_path = ""
        if self.last_model_path and not existing(self.last_model_path):
            self.last_model_path = ""
        if self._last_topk_saved and not existing(self._last_topk_saved):
            self._last_topk_saved = ""

    def _to_state(self, path: str) -> str:
        if not path or self.dirpath is None:
            return path
        return os.path.relpath(path, self.dirpath)

    def _from_state(self, path: str) -> str:
        if not path or self.dirpath is None:
            return path
        return os.path.join(self.dirpath, path)


def _resolve(path: str | os.PathLike[str]) -> str:
    """Lightning resolves ``dirpath`` once, so later ``chdir`` calls cannot move it."""
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


def _canonical(path: str) -> str:
    """Resolve directory symlinks (scratch directories often are) but not the file itself:
    a ``last`` symlink must compare as itself, not as the checkpoint it points to."""
    absolute = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
