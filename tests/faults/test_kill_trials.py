"""SIGKILL at random moments: of saves of several sizes, of top-k retention, of restarts.

A *chain* is one run directory: a job of a random state size (4 KiB to 32 MiB) and length is
started, killed, restarted, killed again... until one start finishes. Each start is a trial
with a kill plan drawn from the seeded RNG: before the K-th file system change of the process
(which can land in the restart's recovery, a commit, an eviction or the update of `last`), at
a random byte of the checkpoint files being written (a torn file), by the test at a random
moment after a random step (asynchronous, as a node failure is), or as a preemption: SIGTERM
after a random step, then SIGKILL after a random grace time, often during the emergency
checkpoint. After every trial:

- the restart reports what it resumed from, and that checkpoint must hold the state of its
  step (never a bad load), be at least as new as the newest checkpoint on disk, and the job
  must never crash;
- every `*.ckpt` left on disk must load with `resilient.load_checkpoint` and hold its step's
  state, and `resilient checkpoints --verify` must find nothing invalid: a kill at any instant
  leaves whole checkpoints or nothing that looks like one.

Two lanes of chains run side by side (the machine has two cores); each lane draws from its
own RNG, so the plans replay from the seed whatever the scheduling (asynchronous kills land
where the timing puts them).
"""

from __future__ import annotations

import math
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ._faults import (
    EXIT_STOPPED,
    SEED,
    TALLY,
    TRIALS,
    Child,
    audit,
    events,
    job_command,
    replay,
    verify_in_process,
)

MAX_KIB = 32 * 1024
LANES = 2
# Rules per scenario: "periodic" keeps the latest and a `last` copy (the replace protocol);
# "retention" ranks by a score, evicts and links `last`; "both" writes once for two rules.
SCENARIOS = {"periodic": ("periodic",), "retention": ("retention", "both")}


@dataclass
class Chain:
    run_dir: Path
    kib: int
    grow_kib: int
    steps: int
    rules: str
    valid: dict[str, int] = field(default_factory=dict)  # after the last trial: path -> step
    step: int = 0  # the newest step a start reported

    def __str__(self) -> str:
        return f"{self.run_dir.name} ({self.rules}, {self.kib} KiB + {self.grow_kib} KiB/step, {self.steps} steps)"


@dataclass
class Costs:
    """File system changes per step, learnt from finished starts, so that op kills land within a start."""

    ops: float = 30.0

    def learn(self, done: dict, resumed: dict) -> None:
        steps = done["step"] - resumed["step"]
        if steps > 0 and done.get("ops"):
            self.ops = max(self.ops * 0.5, done["ops"] / steps)


def _new_chain(rng: random.Random, root: Path, index: int, scenario: str) -> Chain:
    kib = int(math.exp(rng.uniform(math.log(4), math.log(MAX_KIB))))
    return Chain(root / f"chain-{index}", kib, rng.choice([0, 0, 16, 64]), rng.randint(4, 8),
                 rng.choice(SCENARIOS[scenario]))


def _draw_plan(rng: random.Random, chain: Chain, costs: Costs) -> dict:
    left = max(1, chain.steps - chain.step)
    kind = rng.choices(["op", "byte", "async", "preempt"], weights=[5, 3, 2, 2])[0]
    if kind == "op":
        restart = rng.random() < 0.3  # the recovery, orphan removal and bookkeeping of a start
        return {"kill_op": rng.randint(1, 12 if restart else int(costs.ops * left) + 12)}
    if kind == "byte":
        per_step = (chain.kib + chain.grow_kib * (chain.step + left / 2)) * 1024 + 20_000
        return {"kill_byte": rng.randint(1, int(per_step * left))}
    key = "kill_after_step" if kind == "async" else "term_after_step"
    return {key: rng.randrange(chain.step, chain.step + left),
            "delay_s": rng.uniform(0, 0.01 + chain.kib / 1024 * 0.015)}


def _saves(run_dir: Path) -> int:
    """Checkpoints written in the run so far (a start may write none: no score made the top k)."""
    return sum(1 for event in events(run_dir) if event["event"] == "checkpoint")


def _trial(chain: Chain, plan: dict, costs: Costs) -> tuple[str | None, bool, list[str], int]:
    """One start of `chain` under `plan`: (where a SIGKILL landed, if one did; finished; problems; bad loads)."""
    problems: list[str] = []
    bad = 0
    options = {key: value for key, value in plan.items() if key in ("kill_op", "kill_byte")}
    saves_before = _saves(chain.run_dir)
    child = Child(job_command(chain.run_dir, kib=chain.kib, grow_kib=chain.grow_kib, steps=chain.steps,
                              rules=chain.rules, **options))
    signalled = False
    for key in {"kill_after_step", "term_after_step"} & set(plan):
        if child.wait_for("step", step=plan[key]) is not None:
            if key == "term_after_step":  # a preemption: its emergency checkpoint, then SIGKILL after a grace time
                signalled = child.process.poll() is None
                child.process.terminate()
            time.sleep(plan["delay_s"])  # the fault's timing, drawn from the seed
            child.process.kill()
    code = child.finish()
    killed = code == -9
    resumed, done = child.event("resumed"), child.event("done")
    if signalled:
        TALLY.add(fault="preemption signals")
    # A preemption signal that lands once the run has ended (the interpreter exiting, its handlers
    # gone) ends the process as it would any program: the run is complete, nothing to save.
    after_the_end = signalled and code == -signal.SIGTERM and done is not None
    if code not in (0, -9) and not (signalled and code == EXIT_STOPPED) and not after_the_end:
        problems.append(f"the job failed (exit code {code}): {child.stderr[-3000:]}")
    elif killed and "delay_s" not in plan and "fault: SIGKILL" not in child.stderr:
        problems.append(f"killed, but not by its planned fault: {child.stderr[-3000:]}")
    elif code == 0 and done is None:
        problems.append(f"exit code 0 without finishing: {child.stderr[-3000:]}")
    if resumed is not None:
        if resumed["problem"]:
            bad += 1
            problems.append(f"BAD LOAD: resumed from {resumed['checkpoint']} at step {resumed['step']}: "
                            f"{resumed['problem']}")
        newest = max(chain.valid.values(), default=None)
        if newest is not None and resumed["step"] < newest:
            problems.append(f"resumed at step {resumed['step']} ({resumed['checkpoint']}) although "
                            f"{[p for p, s in chain.valid.items() if s == newest]} at step {newest} was valid")
        chain.step = max(chain.step, resumed["step"])
    if done is not None:
        counted = {"kill_op": "ops", "kill_byte": "bytes"}
        for option in set(counted) & set(plan):
            if done[counted[option]] == 0 and _saves(chain.run_dir) > saves_before:
                problems.append(f"the job saw no {counted[option]} to count: the fault injector no longer "
                                "hooks into how checkpoints are written (see scripts/job.py)")
        if done["problem"]:
            bad += 1
            problems.append(f"BAD LOAD: the resumed run ended with a wrong state: {done['problem']}")
        if resumed is not None:
            costs.learn(done, resumed)
    steps = [line["step"] for line in child.events if line.get("event") == "step"]
    chain.step = max([chain.step, *(s + 1 for s in steps[:-1])])
    found = audit([chain.run_dir / "checkpoints", chain.run_dir / "checkpoints" / "emergency"], chain.kib,
                  chain.grow_kib)
    for path, why in found.bad.items():
        bad += 1
        problems.append(f"BAD LOAD: {path} loads but {why}")
    for path, why in found.invalid.items():
        problems.append(f"{path} is visible but does not load: {why}")
    code_verify, output = (verify_in_process(chain.run_dir / "checkpoints")
                           if (chain.run_dir / "checkpoints").is_dir() else (0, "killed before any checkpoint"))
    if code_verify != 0 and not found.invalid:
        problems.append(f"resilient checkpoints --verify exits {code_verify}:\n{output}")
    chain.valid = found.valid
    where = ("kills in a restart" if resumed is None else "kills in a run") if killed else None
    return where, done is not None and code == 0, problems, bad


def _lane(scenario: str, lane: int, trials: int, root: Path) -> list[str]:
    rng = random.Random(f"{SEED}/{scenario}/{lane}")
    costs = Costs()
    failures: list[str] = []
    chain, chains = None, 0
    for trial in range(trials):
        if chain is None:
            chain, chains = _new_chain(rng, root / f"lane-{lane}", chains, scenario), chains + 1
        plan = _draw_plan(rng, chain, costs)
        killed, finished, problems, bad = _trial(chain, plan, costs)
        TALLY.add(trials=1, fault=killed, bad_loads=bad)
        failures += [f"lane {lane} trial {trial}, {chain}, plan {plan}: {problem}" for problem in problems]
        if finished:
            chain = None
    return failures


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_sigkill_at_random_moments_never_loads_a_bad_checkpoint(scenario: str, tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    share = TRIALS // len(SCENARIOS) + (sorted(SCENARIOS).index(scenario) < TRIALS % len(SCENARIOS))
    counts = [share // LANES + (lane < share % LANES) for lane in range(LANES)]
    with ThreadPoolExecutor(LANES) as pool:
        lanes = pool.map(lambda i: _lane(scenario, i, counts[i], tmp_path), range(LANES))
        failures = [failure for lane in lanes for failure in lane]
    assert not failures, "\n".join([*failures[:20], f"({len(failures)} problems)",
                                    replay(f"'{request.node.nodeid}'")])
