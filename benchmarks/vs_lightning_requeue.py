"""Lightning's own SLURM auto-requeue against resilient's Lightning integration, on the real cluster.

The README compares the two; this measures it. The same small Lightning training
(`examples/lightning_classifier.py`'s model and data, `benchmarks/_requeue_training.py`) runs on the
local SLURM cluster (`slurm/local-cluster.sh`) under the same preemption, each way:

- `lightning`: Lightning's way from its SLURM docs: sbatch with `--signal=SIGUSR1@90 --requeue`,
  `srun python ...`, `SLURMEnvironment(auto_requeue=True)`, `ModelCheckpoint(every_n_train_steps=K)`,
  `fit(model)`, which resumes from Lightning's newest `hpc_ckpt_N.ckpt` on SLURM;
- `lightning-last`: the same, resumed as many users do, with `fit(model, ckpt_path="last")`;
- `resilient`: `resilient submit job.yaml` of the same training with the `Resilient` callback.

Scenarios: the warning signal at preemption (the cluster's default), with 1 rank and with 2 (DDP on
gloo, one rank per node); a SIGTERM-only cluster (`local-cluster.sh reconfigure --preempt-signal
term`, restored after); and the newest checkpoint truncated (as a torn write leaves it) while the
preempted job waits to come back. Every job holds at step 8 until the preemption's signal reaches
it; jobs whose ranks fit on the cluster's two nodes together are preempted by one job of partition
`high`. A requeued job is let go at once (SLURM would hold it 2 minutes). Measured for each: did it
come back by itself, did it complete (every wait has a deadline: past it the job is reported hung
and cancelled), how its first start left, the optimizer steps it ran over all starts minus those of
an uninterrupted fit, the checkpoint it resumed from (its step, and whether it reads back whole), and
whether its final weights equal an uninterrupted run's. Nothing is timed.

The cluster is shared: each group of jobs holds `/var/tmp/resilient-slurm.session.lock` (the lock the
test fixture takes) while it runs and releases it after; `--lock-held` says the caller holds it.

    python benchmarks/vs_lightning_requeue.py --dir /var/tmp/vs-lightning --json vs_lightning.json
    python benchmarks/vs_lightning_requeue.py --quick --json out.json   # one scenario, two ways (CI)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import lightning
import torch
import yaml

from resilient.checkpoint import verify
from resilient.slurm import ENDED_STATES, SLURM, JobInfo

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "slurm" / "local-cluster.sh"
STATE_DIR = Path(os.environ.get("RESILIENT_SLURM_STATE", "/var/tmp/resilient-slurm"))
SESSION_LOCK = Path(f"{STATE_DIR}.session.lock")
NODES = 2  # the local cluster's, one CPU each: one rank per node
GATE_STEP, EVERY, EPOCHS = 8, 5, 2  # preempted at step 8 of 28 (1 rank) or 14 (2 ranks); checkpoints every 5
PROBE, FINAL = "probe.jsonl", "final.pt"  # as benchmarks/_requeue_training.py writes them
READY_S, STOPPED_S, END_S, STALL_S, LOCK_S = 300.0, 150.0, 420.0, 150.0, 1800.0  # deadlines, not timings
MAX_RELEASES = 3


class Tool(str, Enum):
    LIGHTNING = "lightning"
    LIGHTNING_LAST = "lightning-last"
    RESILIENT = "resilient"


class Scenario(str, Enum):
    WARNING = "warning-signal"
    WARNING_DDP = "warning-signal-2-ranks"
    SIGTERM_ONLY = "sigterm-only"
    TRUNCATED = "truncated-newest"


@dataclass(frozen=True)
class _Setup:
    ranks: int
    sigterm_only: bool
    damage: bool
    what: str


SETUPS = {
    Scenario.WARNING: _Setup(1, False, False, "preempted once, warning signal, 1 rank"),
    Scenario.WARNING_DDP: _Setup(2, False, False, "preempted once, warning signal, 2 ranks (DDP, gloo)"),
    Scenario.SIGTERM_ONLY: _Setup(1, True, False, "preempted once on a SIGTERM-only cluster, 1 rank"),
    Scenario.TRUNCATED: _Setup(1, False, True, "preempted once, then the checkpoint it would resume from truncated"),
}
TOOL_NAMES = {
    Tool.LIGHTNING: "Lightning auto-requeue, fit(model)",
    Tool.LIGHTNING_LAST: 'Lightning auto-requeue, fit(ckpt_path="last")',
    Tool.RESILIENT: "resilient submit + Resilient callback",
}


# -- the cluster ----------------------------------------------------------------------------------

def _command(args: list[str], timeout: float = 60, cwd: Path | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": _pythonpath()})
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)} exited {done.returncode}: {done.stdout}{done.stderr}")
    return done.stdout


def _pythonpath() -> str:
    """This checkout first, so the jobs import this `resilient` and `benchmarks`/`examples`."""
    return os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


def _job(job_id: str) -> JobInfo:
    return SLURM.show_job(job_id)


def _restarts(job: JobInfo) -> int:
    return int(job.fields.get("Restarts", "0"))


@contextlib.contextmanager
def _cluster(lock_held: bool) -> Iterator[None]:
    """The running cluster, for this process alone (the test fixture's lock) unless the caller holds it."""
    if lock_held:
        yield
        return
    with SESSION_LOCK.open("a+") as handle:
        deadline = time.monotonic() + LOCK_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.seek(0)
                    raise TimeoutError(f"{SESSION_LOCK} still held by pid {handle.read().strip() or '?'} "
                                       f"after {LOCK_S:g} s") from None
                time.sleep(1)
        try:
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
            if subprocess.run(["bash", str(CLUSTER_SCRIPT), "status"], capture_output=True, timeout=60,
                              check=False).returncode != 0:
                _command(["bash", str(CLUSTER_SCRIPT), "install"], timeout=900)
                _command(["bash", str(CLUSTER_SCRIPT), "start"], timeout=180)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _preemption(sigterm_only: bool) -> Iterator[None]:
    """The cluster's preemption signal for the block: SIGTERM only, or its default (the job's --signal)."""
    if not sigterm_only:
        yield
        return
    _command(["bash", str(CLUSTER_SCRIPT), "reconfigure", "--preempt-signal", "term"], timeout=180)
    try:
        yield
    finally:
        _command(["bash", str(CLUSTER_SCRIPT), "reconfigure"], timeout=180)


def _preempt() -> str:
    """A job in `high` on both nodes: it preempts whatever runs in `low`."""
    return _command(["sbatch", "--parsable", "--partition=high", f"--nodes={NODES}", "--job-name=preemptor",
                     "--output=/dev/null", "--wrap", "sleep 1"]).strip().split(";")[0]


def _release(job_id: str) -> bool:
    """Lift SLURM's 2-minute hold of a requeued job, once the clock is 2 s past the requeue (a job
    released in the requeue's second starts with a revoked credential and fails); True when done."""
    job = _job(job_id)
    requeued_at = time.mktime(time.strptime(job.fields["SubmitTime"], "%Y-%m-%dT%H:%M:%S"))
    if job.state == "PENDING" and job.reason == "BeginTime" and time.time() >= requeued_at + 2:
        _command(["scontrol", "update", f"jobid={job_id}", "StartTime=now"])
        return True
    return False


def _cancel(job_ids: list[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60, check=False)


# -- one job ----------------------------------------------------------------------------------------

@dataclass
class _Case:
    """One tool's job in one scenario, stepped by `poll` from submission to its end."""

    scenario: Scenario
    tool: Tool
    directory: Path
    ranks: int
    gate_step: int = GATE_STEP
    job_id: str = ""
    phase: str = "starting"  # starting, ready, preempted, back, done
    came_back: bool = False
    end: str = ""  # completed, or how it did not
    releases: int = 0
    damaged: str | None = None
    since: float = field(default_factory=time.monotonic)
    probe_size: int = -1

    probe_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.probe_dir = self.directory / "probe"
        self.probe_dir.mkdir(parents=True)

    def submit(self) -> None:
        if self.tool is Tool.RESILIENT:
            self.job_id = self._submit_resilient()
        else:
            self.job_id = self._submit_lightning()
        self.since = time.monotonic()

    def _submit_lightning(self) -> str:
        resume = "last" if self.tool is Tool.LIGHTNING_LAST else "hpc"
        task = [sys.executable, "-m", "benchmarks._requeue_training", "--root", str(self.directory / "lightning"),
                "--probe-dir", str(self.probe_dir), "--gate-step", str(self.gate_step), "--every", str(EVERY),
                "--nodes", str(self.ranks), "--epochs", str(EPOCHS), "--resume", resume]
        script = self.directory / "job.sh"
        script.write_text("\n".join([
            "#!/bin/bash",
            "#SBATCH --job-name=vs-lightning",
            "#SBATCH --partition=low",
            f"#SBATCH --nodes={self.ranks}",
            "#SBATCH --ntasks-per-node=1",
            "#SBATCH --time=10",
            "#SBATCH --signal=SIGUSR1@90",
            "#SBATCH --requeue",
            "#SBATCH --open-mode=append",
            f"#SBATCH --output={self.directory}/slurm-%j.out",
            f"#SBATCH --chdir={REPO}",
            f"srun {shlex.join(task)}",
            "",
        ]))
        return _command(["sbatch", "--parsable", str(script)], cwd=REPO).strip().split(";")[0]

    def _submit_resilient(self) -> str:
        run_dir = self.directory / "run"
        job_file = self.directory / "job.yaml"
        job_file.write_text(yaml.safe_dump({
            "name": "vs-lightning",
            "entrypoint": "benchmarks._requeue_training:resilient_train",
            "args": {"probe_dir": str(self.probe_dir), "gate_step": self.gate_step, "every": EVERY,
                     "nodes": self.ranks, "epochs": EPOCHS},
            "executor": "slurm",
            "run_dir": str(run_dir),
            "resources": {"nodes": self.ranks, "tasks_per_node": 1, "time": 10},
            "slurm": {"partition": "low"},
            "checkpoint": [],
        }))
        _command([sys.executable, "-m", "resilient", "submit", str(job_file)], timeout=180, cwd=REPO)
        return json.loads((run_dir / "job.json").read_text())["job_id"]

    # -- stepping --------------------------------------------------------------------------------

    def poll(self) -> None:
        """Advance by what the cluster and the probe say now; past a phase's deadline the job is hung."""
        if self.phase == "done":
            return
        job = _job(self.job_id)
        waited = time.monotonic() - self.since
        if self.phase == "starting":
            if all((self.probe_dir / f"ready-{rank}").exists() for rank in range(self.ranks)):
                self._enter("ready")
            elif job.state in ENDED_STATES:
                self._finish(f"ended {job.state} before the gate")
            elif waited > READY_S:
                self._finish("hung before the gate")
        elif self.phase == "preempted":
            if _restarts(job) >= 1 and job.state == "PENDING":
                self.came_back = True
                if SETUPS[self.scenario].damage:
                    self.damaged = self._damage()
                self._enter("back")
            elif job.state in ENDED_STATES:
                self._finish(f"not requeued: ended {job.state}")
            elif waited > STOPPED_S:
                self._finish("hung: still running after the grace time")
        elif self.phase == "back":
            self._poll_back(job, waited)

    def _poll_back(self, job: JobInfo, waited: float) -> None:
        if job.state == "PENDING":
            if _restarts(job) > self.releases and self.releases < MAX_RELEASES and _release(self.job_id):
                self.releases += 1
                self.since = time.monotonic()
            elif waited > END_S:
                self._finish(f"still pending after {self.releases} releases")
        elif job.state in ENDED_STATES:
            self._finish("completed" if job.state == "COMPLETED" and self._finished() else f"ended {job.state}")
        else:
            size = (self.probe_dir / PROBE).stat().st_size if (self.probe_dir / PROBE).exists() else 0
            if size != self.probe_size:
                self.probe_size, self.since = size, time.monotonic()
            elif waited > STALL_S:
                self._finish(f"hung: no step for {STALL_S:g} s")

    def preempted(self) -> None:
        if self.phase == "ready":
            self._enter("preempted")

    def start_back(self) -> None:
        """A reference run: no preemption, straight to waiting for its end."""
        self._enter("back")

    def _enter(self, phase: str) -> None:
        self.phase, self.since = phase, time.monotonic()

    def _finish(self, end: str) -> None:
        self.end, self.phase = end, "done"
        if end != "completed" and _job(self.job_id).state not in ENDED_STATES:
            _cancel([self.job_id])

    def _finished(self) -> bool:
        return any(record["event"] == "left" and record["how"] == "finished" for record in self.records())

    def records(self) -> list[dict[str, Any]]:
        path = self.probe_dir / PROBE
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def _damage(self) -> str:
        """Truncate to half the file this tool would resume from, as a torn write leaves it."""
        if self.tool is Tool.RESILIENT:
            emergency = sorted((self.directory / "run" / "checkpoints" / "emergency").glob("step=*.ckpt"),
                               key=lambda path: int(path.name[5:-5]))
            target = emergency[-1] / "lightning.pt"
        elif self.tool is Tool.LIGHTNING_LAST:
            target = self.directory / "lightning" / "checkpoints" / "last.ckpt"
        else:
            target = max((self.directory / "lightning").glob("hpc_ckpt_*.ckpt"),
                         key=lambda path: int(path.stem.rpartition("_")[2]))
        with target.open("r+b") as file:
            file.truncate(target.stat().st_size // 2)
        return str(target)

    # -- results ---------------------------------------------------------------------------------

    def result(self, reference: Path | None) -> dict[str, Any]:
        records = self.records()
        starts = [r for r in records if r["event"] == "start"]
        total = starts[0]["total"] if starts else None
        steps = [r["step"] for r in records if r["event"] == "step"]
        left = {r["start"]: r for r in records if r["event"] == "left"}
        first_left = left.get(0)
        resumed = [r for r in starts if r["start"] > 0]
        # A start that failed to load never records one: it tried the file damaged for it.
        resumed_from = resumed[-1]["ckpt_path"] if resumed else self.damaged if self.came_back else None
        completed = self.end == "completed"
        return {
            "scenario": self.scenario.value, "tool": self.tool.value, "job_id": self.job_id,
            "came_back": self.came_back, "end": self.end, "completed": completed,
            "first_start_left": (f"{first_left['how']} at step {first_left['step']}" if first_left
                                 else "killed by SLURM, never left fit"),
            "stuck_in": None if first_left else self._stuck_in(),
            "starts": len(starts), "steps_run": len(steps), "uninterrupted_steps": total,
            "steps_redone": len(steps) - total if completed and total is not None else None,
            "last_step": max(steps, default=0),
            "resumed_at_step": resumed[-1]["step"] if resumed else None,
            "resumed_from": resumed_from,
            "resumed_from_valid": _reads_back(resumed_from) if resumed_from else None,
            "damaged": self.damaged,
            "final_weights_equal_uninterrupted": _same_weights(self.probe_dir / FINAL, reference)
            if completed and reference is not None else None,
            "error": None if completed else self._last_error(),
        }

    def _stuck_in(self) -> dict[str, str]:
        """Rank -> the innermost frames of its main thread, from the stacks its process wrote while
        it outlived the signal (benchmarks/_requeue_training.py's Gate)."""
        stuck = {}
        for path in sorted(self.probe_dir.glob("stacks-*.txt")):
            threads = re.split(r"\n(?=(?:Current thread|Thread) 0x)", path.read_text())
            main = next((thread for thread in threads if "_run_module_as_main" in thread or "submitit" in thread), "")
            frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', main)[:2]
            stuck[path.stem.partition("-")[2]] = " < ".join(f"{Path(file).name}:{line} {name}"
                                                            for file, line, name in frames)
        return stuck

    def _last_error(self) -> str | None:
        """The last line naming an error in the job's output files, if any."""
        found = None
        for path in sorted([*self.directory.rglob("*.out"), *self.directory.rglob("*.err")]):
            for line in path.read_text(errors="replace").splitlines():
                if "Error" in line and not line.startswith(" "):
                    found = line.strip()[:200]
        return found


def _reads_back(path: str) -> str:
    """Whether the checkpoint resumed from is whole now: a resilient directory's every checksum, a
    Lightning file's full unpickling with its optimizer state."""
    try:
        if Path(path).is_dir():
            verify(Path(path), full=True)
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=False)
            if "optimizer_states" not in loaded:
                return "no optimizer state"
    except Exception as error:  # any failure to read back is the answer
        return f"unreadable: {type(error).__name__}"
    return "yes"


def _same_weights(final: Path, reference: Path) -> bool | None:
    if not final.exists() or not reference.exists():
        return None
    ours, theirs = (torch.load(path, map_location="cpu", weights_only=True) for path in (final, reference))
    return ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours)


# -- the runs -------------------------------------------------------------------------------------

def _groups(scenario: Scenario, tools: list[Tool]) -> list[list[Tool]]:
    """Tools whose jobs fit on the cluster's nodes together run side by side, preempted by one job."""
    per_group = max(1, NODES // SETUPS[scenario].ranks)
    return [tools[index:index + per_group] for index in range(0, len(tools), per_group)]


def _wait(cases: list[_Case], phase: str) -> None:
    while any(case.phase not in (phase, "done") for case in cases):
        for case in cases:
            case.poll()
        time.sleep(0.5)


def _run_group(scenario: Scenario, tools: list[Tool], base: Path, lock_held: bool) -> list[_Case]:
    cases = [_Case(scenario, tool, base / scenario.value / tool.value, SETUPS[scenario].ranks) for tool in tools]
    with _cluster(lock_held), _preemption(SETUPS[scenario].sigterm_only):
        preemptor: list[str] = []
        try:
            for case in cases:
                case.submit()
            _wait(cases, "ready")
            if any(case.phase == "ready" for case in cases):
                preemptor.append(_preempt())
                for case in cases:
                    case.preempted()
            _wait(cases, "done")
        finally:
            _cancel([case.job_id for case in cases if case.job_id and case.phase != "done"] + preemptor)
    return cases


def _reference(ranks: int, base: Path, lock_held: bool) -> Path | None:
    """An uninterrupted fit's final weights (Lightning's way, no gate, no preemption)."""
    case = _Case(Scenario.WARNING, Tool.LIGHTNING, base / "reference" / f"{ranks}-ranks", ranks, gate_step=-1)
    with _cluster(lock_held):
        try:
            case.submit()
            case.start_back()
            _wait([case], "done")
        finally:
            _cancel([case.job_id] if case.phase != "done" else [])
    return case.probe_dir / FINAL if case.end == "completed" else None


def _mark_step(step: int | None) -> str:
    return "none: its load failed" if step is None else str(step)


def _mark(value: bool | None) -> str:
    return "n/a" if value is None else "yes" if value else "no"


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| scenario | way | came back by itself | end | first start left by | steps run - uninterrupted "
             "| resumed from | final weights = uninterrupted |",
             "|---|---|---|---|---|---:|---|---|"]
    for each in rows:
        resumed = "n/a" if each["resumed_from"] is None else \
            f"{Path(each['resumed_from']).name} (step {_mark_step(each['resumed_at_step'])}, " \
            f"reads back: {each['resumed_from_valid']})"
        redone = each["steps_redone"] if each["steps_redone"] is not None else \
            f"n/a (stopped at {each['last_step']} of {each['uninterrupted_steps']})"
        end = each["end"] + (f": {each['error']}" if each["error"] else "")
        left = each["first_start_left"] + "".join(f"; rank {rank} in {where}"
                                                  for rank, where in (each["stuck_in"] or {}).items())
        lines.append(f"| {each['scenario']} | {TOOL_NAMES[Tool(each['tool'])]} | {_mark(each['came_back'])} | {end} "
                     f"| {left} | {redone} | {resumed} "
                     f"| {_mark(each['final_weights_equal_uninterrupted'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="where the jobs' directories go (default: a new temporary one)")
    parser.add_argument("--scenarios", nargs="+", type=Scenario, choices=list(Scenario), default=list(Scenario))
    parser.add_argument("--tools", nargs="+", type=Tool, choices=list(Tool), default=list(Tool))
    parser.add_argument("--quick", action="store_true",
                        help="one scenario (warning-signal), Lightning's fit(model) and resilient, no reference run")
    parser.add_argument("--lock-held", action="store_true", help=f"the caller holds {SESSION_LOCK} (a test fixture)")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.scenarios, args.tools = [Scenario.WARNING], [Tool.LIGHTNING, Tool.RESILIENT]
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="vs-lightning-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SLURM_CONF", str(STATE_DIR / "etc" / "slurm.conf"))

    references: dict[int, Path | None] = {}
    rows = []
    for scenario in args.scenarios:
        ranks = SETUPS[scenario].ranks
        if not args.quick and ranks not in references:
            references[ranks] = _reference(ranks, base, args.lock_held)
        for tools in _groups(scenario, args.tools):
            for case in _run_group(scenario, tools, base, args.lock_held):
                rows.append(case.result(references.get(ranks)))

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"measured {when} on {platform.node()} ({os.cpu_count()} CPUs), Lightning {lightning.__version__}, "
          f"torch {torch.__version__}; the local SLURM cluster, GraceTime=30, KillWait=5; preempted at step "
          f"{GATE_STEP}, ModelCheckpoint(every_n_train_steps={EVERY}), {EPOCHS} epochs; jobs in {base}\n")
    for scenario in args.scenarios:
        print(f"- {scenario.value}: {SETUPS[scenario].what}")
    print()
    print(_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "measured": when, "lightning": lightning.__version__, "torch": torch.__version__,
            "gate_step": GATE_STEP, "every_n_train_steps": EVERY, "epochs": EPOCHS,
            "scenarios": {scenario.value: SETUPS[scenario].what for scenario in args.scenarios},
            "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
