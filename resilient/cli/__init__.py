"""The `resilient` command: submit a job file, then watch, steer and inspect the run.

Every command turns a user's mistake (a bad job file, an unknown run, a job that is not
running, no SLURM for a SLURM job) into one line on stderr and exit code 2, without a
traceback; exit code 1 means the job itself failed, a checkpoint is invalid or a file of the
run directory is damaged (also one line, never a traceback); 0 means all is well.

Building the parser imports no torch: a command that needs it (`submit`, `schema`, `export`) imports
what it needs when it runs, so `--help`, `status`, `report`, `logs`, `cancel`, `preempt` and
`checkpoints` start in a fraction of a second instead of seconds.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from .._version import __version__
from ..config import ConfigError
from ..rundir import DamagedFile, RunDirError
from ..submission import SubmissionError
from . import _checkpoints, _control, _export, _inspect, _report, _submit
from ._common import EXIT_JOB_FAILED, EXIT_USAGE, UsageError

_EXAMPLES = """\
examples:
  resilient submit examples/quickstart.yaml --follow   # runs here, on the local executor
  resilient status                                     # every run under ./runs
  resilient report quickstart                          # where its wall time went (goodput)
  resilient logs quickstart -f
  resilient preempt quickstart                         # a fire drill
  resilient checkpoints runs/quickstart --verify
  resilient export runs/quickstart model.pt --only model   # one plain file, sharded state made whole

`resilient COMMAND --help` describes each command. Exit codes: 0 all is well; 1 the job failed,
a checkpoint is invalid or a run's files are damaged; 2 a mistake on the command line or in the
job file (nothing was done).
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a command-line mistake is one line like every other usage error."""

    def error(self, message: str) -> NoReturn:
        print(f"resilient: error: {message} (see: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="resilient", description="Training jobs that survive preemption, time limits and crashes.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"resilient {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in (_submit, _inspect, _report, _control, _checkpoints, _export):
        module.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (0 ok, 1 job failed, 2 usage or configuration error)."""
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except DamagedFile as error:
        print(f"resilient: error: {error}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except (ConfigError, UsageError, RunDirError, SubmissionError) as error:
        print(f"resilient: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("resilient: interrupted; a submitted job goes on (resilient status)", file=sys.stderr)
        return 130
