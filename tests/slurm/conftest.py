"""A real SLURM cluster for tests: slurmctld and two slurmd nodes on this machine.

The session fixture ``slurm_cluster`` installs SLURM if needed and starts the cluster through
``slurm/local-cluster.sh`` rather than skipping: preemption and requeue are the behaviour under
test, and only the real daemons show how signals, job states and requeues interleave. Helpers
poll ``scontrol show job`` (there is no accounting database) and wait on events with deadlines.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "slurm" / "local-cluster.sh"
STATE_DIR = Path(os.environ.get("RESILIENT_SLURM_STATE", "/var/tmp/resilient-slurm"))
SESSION_LOCK = Path(f"{STATE_DIR}.session.lock")

# States after which a job never runs again (a requeued job passes through COMPLETING to PENDING).
FINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL",
     "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"}
)
PREEMPT_MODES = ("requeue", "cancel")
PREEMPT_SIGNALS = ("user", "term")


def _run(args: list[str], timeout: float, cwd: Path | None = None,
         env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited with {result.returncode}\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def _wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    """A deadline on an event, not a timing assertion: ``timeout`` only bounds how long a broken
    cluster can hang the test."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


def _cluster_script(*args: str, timeout: float = 180) -> str:
    return _run(["bash", str(SCRIPT), *args], timeout=timeout)


class SlurmCluster:
    """Submits, inspects and steers jobs on the local cluster.

    Jobs run as the current user (root) on this machine, so a job's files are the test's files:
    scripts and default outputs go to ``workdir`` (a per-test ``tmp_path`` where given).
    """

    script = SCRIPT  #: slurm/local-cluster.sh, for tests that drive the daemons themselves

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._scripts = 0

    # -- submitting -----------------------------------------------------------------------

    def sbatch(self, script: str, *options: str, workdir: Path | None = None,
               env: Mapping[str, str] | None = None) -> int:
        """Submit ``script`` (batch script text; ``#!/bin/bash`` is added when it has no shebang).

        ``options`` go to sbatch's command line (they override ``#SBATCH`` lines); ``env`` is
        added to this process's environment, which sbatch exports to the job. The job runs in
        ``workdir``, where its ``slurm-<id>.out`` appears.
        """
        if not isinstance(script, str):
            raise TypeError(f"script must be the batch script's text, got {type(script).__name__}")
        workdir = Path(workdir) if workdir is not None else self.workdir
        if not script.startswith("#!"):
            script = "#!/bin/bash\n" + script
        self._scripts += 1
        path = workdir / f"job-{os.getpid()}-{self._scripts}.sh"
        path.write_text(script)
        out = _run(["sbatch", "--parsable", *options, str(path)], timeout=60, cwd=workdir,
                   env={**os.environ, **(env or {})})
        return int(out.strip().split(";")[0])

    def preempt(self, nodes: int = 2, hold_s: int = 1, nodelist: str | None = None) -> int:
        """Submit a ``high`` partition job that needs ``nodes`` nodes, which preempts ``low`` jobs.

        Nodes have one CPU each, so ``nodes=2`` takes the whole cluster and preempts whatever
        runs in ``low``; ``nodelist`` (e.g. ``"n1"``) aims at one node. The job sleeps
        ``hold_s`` seconds once it gets the nodes, then frees them.
        """
        if not 1 <= nodes <= 2:
            raise ValueError(f"nodes must be 1 or 2 (the cluster has n1 and n2), got {nodes}")
        if hold_s < 0:
            raise ValueError(f"hold_s must be >= 0, got {hold_s}")
        options = ["--partition=high", f"--nodes={nodes}", "--job-name=preemptor", "--output=/dev/null"]
        if nodelist is not None:
            options.append(f"--nodelist={nodelist}")
        return self.sbatch(f"sleep {hold_s}\n", *options)

    # -- inspecting -------------------------------------------------------------------------

    def job(self, job_id: int) -> dict[str, str]:
        """All fields of ``scontrol show job`` (JobState, Reason, Restarts, PreemptTime, ...)."""
        out = _run(["scontrol", "--oneliner", "show", "job", str(job_id)], timeout=30)
        fields: dict[str, str] = {}
        for token in out.split():
            key, sep, value = token.partition("=")
            if sep:
                fields.setdefault(key, value)
        return fields

    def state(self, job_id: int) -> str:
        """The job's state as slurmctld sees it, e.g. ``RUNNING``, ``PENDING``, ``COMPLETED``.

        Read from ``scontrol`` rather than ``squeue``: squeue forgets finished jobs and shows
        transient states such as SIGNALING.
        """
        return self.job(job_id)["JobState"]

    def output(self, job_id: int) -> str:
        """What the job wrote to its standard output file so far ("" before it exists)."""
        path = Path(self.job(job_id)["StdOut"])
        return path.read_text() if path.exists() else ""

    # -- waiting ----------------------------------------------------------------------------

    def wait_until(self, condition: Callable[[], object], timeout: float = 60.0,
                   what: str = "condition") -> object:
        """Poll ``condition`` until it returns something truthy, and return that."""
        return _wait_until(condition, timeout, what)

    def wait_for(self, job_id: int, states: str | Collection[str], timeout: float = 60.0) -> str:
        """Wait until the job is in one of ``states`` and return that state.

        Fails at once, with the job's record and output, if the job reaches a final state that
        was not asked for: a job that has failed will not reach RUNNING by waiting.
        """
        wanted = {states} if isinstance(states, str) else set(states)
        if not wanted:
            raise ValueError("states must name at least one job state")

        def reached() -> str | None:
            state = self.state(job_id)
            if state in wanted:
                return state
            if state in FINAL_STATES:
                raise AssertionError(self._describe(job_id, f"ended {state}, expected {sorted(wanted)}"))
            return None

        try:
            return str(self.wait_until(reached, timeout, f"job {job_id} to be {sorted(wanted)}"))
        except TimeoutError as exc:
            raise TimeoutError(self._describe(job_id, str(exc))) from None

    def _describe(self, job_id: int, problem: str) -> str:
        job = self.job(job_id)
        keys = ("JobState", "Reason", "Restarts", "ExitCode", "PreemptTime", "NodeList")
        summary = " ".join(f"{k}={job.get(k)}" for k in keys)
        return f"job {job_id} {problem}\n  {summary}\n  output:\n{self.output(job_id)}"

    # -- steering ---------------------------------------------------------------------------

    def release(self, job_id: int) -> None:
        """Let a requeued job start now: SLURM holds requeued jobs for 120 s (BeginTime)."""
        _run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], timeout=30)

    def cancel(self, job_id: int, *options: str) -> None:
        """``scancel`` with ``options`` (e.g. ``--signal=USR2``, ``--batch``)."""
        _run(["scancel", *options, str(job_id)], timeout=30)

    def cancel_all(self, timeout: float = 60.0) -> None:
        """Cancel every job and wait until no job holds a node, so the next test starts clean."""
        jobs = _run(["squeue", "-h", "-o", "%i"], timeout=30).split()
        if jobs:
            _run(["scancel", *jobs], timeout=30)
        self.wait_until(
            lambda: not _run(["squeue", "-h", "-t", "RUNNING,COMPLETING,SUSPENDED", "-o", "%i"],
                             timeout=30).split(),
            timeout, "all jobs to leave the nodes",
        )

    @contextlib.contextmanager
    def reconfigure(self, preempt_mode: str = "requeue", preempt_signal: str = "user",
                    grace_time: int = 30) -> Iterator[None]:
        """Switch the cluster's preemption behaviour for the ``with`` block, then restore defaults.

        ``preempt_mode``: ``requeue`` or ``cancel`` (PreemptMode); ``preempt_signal``: ``user``
        (the job's --signal is sent at preemption) or ``term`` (SIGTERM only); ``grace_time``:
        seconds between the first signal and SIGKILL for a preempted job.
        """
        if preempt_mode not in PREEMPT_MODES:
            raise ValueError(f"preempt_mode must be one of {PREEMPT_MODES}, got {preempt_mode!r}")
        if preempt_signal not in PREEMPT_SIGNALS:
            raise ValueError(f"preempt_signal must be one of {PREEMPT_SIGNALS}, got {preempt_signal!r}")
        if not isinstance(grace_time, int) or grace_time < 0:
            raise ValueError(f"grace_time must be a whole number of seconds >= 0, got {grace_time!r}")
        _cluster_script("reconfigure", "--preempt-mode", preempt_mode,
                        "--preempt-signal", preempt_signal, "--grace-time", str(grace_time))
        try:
            yield
        finally:
            _cluster_script("reconfigure")


def _cluster_running() -> bool:
    return subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, timeout=60,
                          check=False).returncode == 0


@contextlib.contextmanager
def _one_session_at_a_time(timeout: float = 240.0) -> Iterator[None]:
    """Hold the cluster for this pytest session alone.

    Tests preempt whatever runs in ``low``, switch the preemption mode and cancel leftover
    jobs: two sessions on one machine would wreck each other's jobs, so a second one waits,
    and gives up (within pytest's per-test timeout) naming the session that holds the cluster.
    """
    with SESSION_LOCK.open("a+") as handle:

        def acquired() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        try:
            _wait_until(acquired, timeout, f"the SLURM cluster ({SESSION_LOCK})")
        except TimeoutError as exc:
            handle.seek(0)
            raise TimeoutError(f"{exc}: held by pytest pid {handle.read().strip() or '?'}") from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """The running local cluster, installed and started if needed; stopped again only if this
    session started it, so a cluster someone brought up by hand is left as it was."""
    with _one_session_at_a_time():
        was_running = _cluster_running()
        _cluster_script("install", timeout=900)
        _cluster_script("start")
        # Jobs and client commands find the cluster through /etc/slurm/slurm.conf when the
        # script could link it there; SLURM_CONF covers a machine whose /etc/slurm is not ours.
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SLURM_CONF", str(STATE_DIR / "etc" / "slurm.conf"))
            yield SlurmCluster(tmp_path_factory.mktemp("slurm-jobs"))
        if not was_running:
            _cluster_script("stop")


@pytest.fixture(autouse=True)
def _free_slurm_nodes(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that used the cluster, cancel its leftover jobs: a job still holding a
    node would make the next test wait for resources instead of testing anything."""
    yield
    if "slurm_cluster" in request.fixturenames:
        request.getfixturevalue("slurm_cluster").cancel_all()
