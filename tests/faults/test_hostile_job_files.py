"""Hostile job files through the command's code: `resilient submit FILE --dry-run`.

Each file is built to make validation hang (alias bombs, recursion), crash (5000-deep nesting,
control bytes, values too large for any type) or let something dangerous through (lines
injected into the batch script, a warning signal that cannot be caught, the file system root
as run directory, code in a YAML tag). Each must be refused as a usage error: exit code 2, one
line on stderr, no traceback. The valid base files and the file whose YAML tag would run code
go through the real command, each in a process of its own; the others run one after another in
one process (which imports torch once, not once a file). Every process has a time and memory
bound, so a hang or a blow-up fails its case, and those the process never reached, instead of
the suite.
"""

from __future__ import annotations

import resource
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cli._cli import ENV, REPO, assert_usage_error, command, in_one_process

from ._faults import TALLY

HANG_S = 60  # a process validates all its files in a few seconds; generous, for a machine shared with other runs
MEMORY_LIMIT = 2 << 30


def _base(run_dir: Path, executor: str = "local") -> str:
    return (f"name: hostile\nentrypoint: tests.config.fixtures.plain:flexible\nexecutor: {executor}\n"
            f"run_dir: {run_dir}\n")


def _bomb(levels: int = 9) -> str:
    lines = ['  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "args:\n" + "\n".join(lines) + "\n"


# name -> (the file's text after the base, executor); `{pwned}` is a path the file must never create.
# The executor is local wherever the value is checked whatever the executor, so that the cases do
# not need SLURM's commands; values that only a cluster would take (node counts, time limits)
# are tried on slurm, where the local executor would refuse them for another reason.
HOSTILE: dict[str, tuple[str, str]] = {
    "alias bomb": (_bomb(), "local"),
    "recursive alias (mapping)": ("args: &a\n  x: *a\n", "local"),
    "recursive alias (list)": ("args:\n  x: &b [1, *b]\n", "local"),
    "recursive merge key": ("args: &m\n  <<: *m\n", "local"),
    "5000-deep list": ("args:\n  x: " + "[" * 5000 + "]" * 5000 + "\n", "local"),
    "5000-deep mapping": ("args:\n  x: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", "local"),
    "NUL byte in the file": ("args:\n  x: a\0b\n", "local"),
    "BEL byte in the file": ("args:\n  x: a\ab\n", "local"),
    "NUL escape in the name": ('name: "job\\0"\n', "local"),
    "BEL escape in the partition": ('slurm:\n  partition: "low\\a"\n', "local"),
    "invalid UTF-8": ("args:\n  x: \udcff\udcfe\n", "local"),
    "huge node count": ("resources:\n  nodes: " + "9" * 40 + "\n", "slurm"),
    "huge time in minutes": ("resources:\n  time: " + "9" * 30 + "\n", "slurm"),
    "infinite time": ("resources:\n  time: 1e400\n", "slurm"),
    "huge signal delay": ("slurm:\n  signal_delay: " + "9" * 30 + "\n", "slurm"),
    "NaN memory": ("resources:\n  mem_gb: .nan\n", "slurm"),
    "megabyte name": ("name: " + "a" * (1 << 20) + "\n", "local"),
    "megabyte key": ("a" * (1 << 20) + ": 1\n", "local"),
    "newline injected into the batch script": ('slurm:\n  partition: "low\\n#SBATCH --uid=0"\n', "local"),
    "option injected into the batch script": ('slurm:\n  options:\n    constraint: "a100\\n#SBATCH --uid=0"\n',
                                              "local"),
    "uncatchable signal KILL": ("slurm:\n  signal: KILL\n", "local"),
    "uncatchable signal STOP": ("slurm:\n  signal: STOP\n", "local"),
    "uncatchable signal 9": ("slurm:\n  signal: 9\n", "local"),
    "run_dir is /": ("run_dir: /\n", "local"),
    "python tag runs code": ("args:\n  x: !!python/object/apply:os.system ['touch {pwned}']\n", "local"),
}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _dry_run(job_file: Path) -> tuple[object, ...]:
    return ("submit", job_file, "--dry-run")


def _submit(job_file: Path) -> subprocess.CompletedProcess[str]:
    args = command(*_dry_run(job_file))
    try:
        return subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=HANG_S, check=False,
                              preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, None, "", f"HUNG: no exit within {HANG_S} s")


def _submit_one_after_another(job_files: list[Path]) -> list[subprocess.CompletedProcess[str]]:
    results = in_one_process([_dry_run(path) for path in job_files], env=ENV, timeout=HANG_S,
                             preexec_fn=_limit_memory)
    return [subprocess.CompletedProcess(result["argv"], result["code"], result["stdout"], result["stderr"])
            for result in results]


def _write(directory: Path, name: str, text: str, executor: str) -> Path:
    """The base file with the hostile part; a top-level key the hostile part sets replaces the base's
    (a duplicate key would be refused for the wrong reason)."""
    hostile_keys = {line.split(":")[0] for line in text.splitlines() if line[:1].strip() and ":" in line}
    base = [line for line in _base(directory / "run", executor).splitlines(keepends=True)
            if line.split(":")[0] not in hostile_keys]
    path = directory / f"{name.replace(' ', '-').replace('/', '_')}.yaml"
    text = "".join(base) + text.replace("{pwned}", str(directory / "pwned"))
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    return path


# Through the real command, each in a process of its own.
_ON_THEIR_OWN = ("local", "slurm", "python tag runs code")


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    directory = tmp_path_factory.mktemp("hostile")
    files = {name: _write(directory, name, text, executor) for name, (text, executor) in HOSTILE.items()}
    files["local"] = _write(directory, "baseline-local", "", "local")
    files["slurm"] = _write(directory, "baseline-slurm", "", "slurm")  # a dry run needs no SLURM
    together = [name for name in files if name not in _ON_THEIR_OWN]
    with ThreadPoolExecutor(2) as pool:
        batch = pool.submit(_submit_one_after_another, [files[name] for name in together])
        results = dict(zip(_ON_THEIR_OWN, pool.map(_submit, [files[name] for name in _ON_THEIR_OWN])))
        results.update(zip(together, batch.result(), strict=True))
    results["pwned"] = (directory / "pwned").exists()  # type: ignore[assignment]
    return results


@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_the_base_file_is_valid(executor: str, refusals: dict[str, subprocess.CompletedProcess[str]]) -> None:
    """What the hostile files add is what gets them refused."""
    result = refusals[executor]
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_job_file_is_one_line_and_exit_code_2(
    name: str, refusals: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    TALLY.add(fault="hostile job files")
    assert not refusals["pwned"], "a YAML tag ran code while the file was validated"
    assert_usage_error(refusals[name])
