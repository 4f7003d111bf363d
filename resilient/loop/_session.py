"""A run's hold on its directory and process, from the start record to the exit code.

Starting takes the run lock and records the start on rank 0, then tells every rank whether to
go on (another job holds the directory, or the run may not start again); it installs the stop
signals. Ending records how the run ended whatever the way out (a finished loop, a stop at a
boundary, an exception, Ctrl-C, `sys.exit()`), gives the signals and the process group back and
turns a requeue or a failure into the process's exit code. A stop at a boundary leaves with
`RunStopped`, a SystemExit that tells the process's owner nothing is left to save.
"""

from __future__ import annotations

import signal
import traceback
from pathlib import Path

from ..coordination import (
    DistInfo,
    SignalRecorder,
    StepAgreement,
    broadcast_object,
    shutdown,
)
from ..requeue import Cause, Host, Notify, RequeuePolicy, conclude
from ..rundir import Heartbeat, RunDirInUse, RunLock, State, read_heartbeat, read_status
from ._boundary import Interrupted


class RunStopped(SystemExit):
    """How a run leaves after it stopped at a step boundary (a preemption, a time limit, a cancel,
    Ctrl-C): its emergency checkpoint is committed and its end recorded (status.json fsynced,
    events.jsonl written with unbuffered `os.write`), the process group left, on every rank.

    To the code around the Run it is a SystemExit like any other: a user's script sees the same
    exception, and its `finally` blocks and the code after it run. It exists for the process
    that resilient owns, a submitted job's task, which may then leave at once instead of paying
    the interpreter's teardown with torch loaded (`submission/_main.py`).
    """


class Session:
    """One start of a run in this process: lock, start and end records, signals, exit code."""

    def __init__(self, run_dir: Path, dist: DistInfo, host: Host, signals: SignalRecorder, agreement: StepAgreement,
                 policy: RequeuePolicy, warning_signal: int, notify: Notify | None = None) -> None:
        self._run_dir = run_dir
        self._dist = dist
        self._host = host
        self._signals = signals
        self._agreement = agreement
        self._policy = policy
        self._warning_signal = warning_signal
        self._notify = notify if dist.rank == 0 else None  # rank 0 alone tells of the end
        self._lock = RunLock(run_dir)
        self._closed = False
        self.heartbeat: Heartbeat | None = None  # rank 0's, once the start is recorded
        self.completed_before = False  # whether the run's previous start had completed it

    def open(self) -> None:
        """Start on every rank, or leave together: `RunDirInUse`, or `SystemExit` when the run may not start."""
        refusal, self.completed_before = broadcast_object(self._begin() if self._dist.rank == 0 else None, self._dist)
        if refusal is not None:
            self.close()
            if isinstance(refusal, RunDirInUse):
                raise refusal
            conclude.announce(refusal)
            raise SystemExit(refusal.exit_code)
        try:
            self._signals.install(stacklevel=4)  # the warning names the code creating the Run
        except BaseException as error:  # the start is recorded: so must be its end
            self.end(error, step=0, did_anything=False)
            raise

    def _begin(self) -> tuple[conclude.Outcome | RunDirInUse | None, bool]:
        """Rank 0 takes the run directory and records the start: a refusal that stops every rank,
        and whether the run's previous start had completed it."""
        try:
            self._lock.acquire(self._host.job_id)
        except RunDirInUse as error:
            return error, False
        completed = read_status(self._run_dir).state == State.COMPLETED
        refusal = conclude.begin(self._run_dir, self._host, self._dist.world_size, read_heartbeat(self._run_dir))
        if refusal is None:
            try:
                self.heartbeat = Heartbeat(self._run_dir)  # read above, for the start before: now this one's
            except OSError:  # noqa: S110 - a record, as events are: the start goes on without it
                pass
        return refusal, completed

    def close(self, *, together: bool = True) -> None:
        """Give the signals back and leave the process group if this run created it.

        `together=False` when this rank alone is leaving (it crashed): no collective then.
        """
        if not self._closed:
            self._closed = True
            self._signals.uninstall()
            if together:
                self._agreement.close()
            shutdown(self._dist, together=together)
            self._lock.release()
            if self.heartbeat is not None:
                self.heartbeat.close()

    def end(self, error: BaseException | None, *, step: int, did_anything: bool) -> None:
        """Record how the run ended and close; after an interruption or a crash, requeue or exit as the policy says.

        `did_anything`: whether the run looked for a checkpoint (a completed run called again that
        did nothing is not recorded as finishing again at its step).
        """
        try:
            outcome = self._conclude(error, step, did_anything)
        finally:
            self.close(together=error is None or isinstance(error, Interrupted))
        if outcome is not None:
            if self._dist.rank == 0 or not isinstance(error, Interrupted):
                conclude.announce(outcome)
            raise (RunStopped if isinstance(error, Interrupted) else SystemExit)(outcome.exit_code) from None

    def _conclude(self, error: BaseException | None, step: int, did_anything: bool) -> conclude.Outcome | None:
        rank0 = self._dist.rank == 0
        if isinstance(error, Interrupted):
            outcome = None
            if rank0:
                received = error.flags.signals(self._warning_signal)
                cause = (Cause.CTRL_C if signal.SIGINT in received else
                         self._host.classify(received, self._warning_signal, deadline_hit=error.flags.deadline))
                outcome = conclude.after_interrupt(self._run_dir, self._host, self._policy, cause, error.checkpoint,
                                                   step=step, notify=self._notify)
            return broadcast_object(outcome, self._dist)
        if self._signals.forced or isinstance(error, KeyboardInterrupt):
            # Whatever a second Ctrl-C interrupted (a save turns it into torch's own error), it ends here.
            return conclude.after_abort(self._run_dir, self._host,
                                         f"stopped by Ctrl-C at step {step}, without a checkpoint; run it again "
                                         "to resume from the last one", step=step, notify=self._notify)
        if error is None or isinstance(error, SystemExit) and error.code in (None, 0):
            if rank0:
                idle = self.completed_before and not did_anything  # called again, did nothing
                conclude.finish(self._run_dir, self._host, None if idle else step, self._notify)
            return None
        if isinstance(error, SystemExit):
            error = RuntimeError(f"the training code called sys.exit({error.code!r})")
        outcome = conclude.after_crash(self._run_dir, self._host, self._policy, error, step=step,
                                       notify=self._notify)
        if outcome is not None:
            traceback.print_exception(error)
        return outcome
