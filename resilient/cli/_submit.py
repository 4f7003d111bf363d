"""`resilient submit JOB.yaml` and `resilient schema`: from a job file to a running job.

The job file's model and `launch` import torch (through `Run`, and the entrypoint's own module),
and submitting imports submitit and yaml, so they are imported when these commands run, not when
`resilient --help` builds the parser.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from ..rundir import State, submitit_folder
from ..submission import EXECUTORS, SlurmUnavailable
from ._common import EXIT_JOB_FAILED, EXIT_OK, UsageError, ended, say, table
from ._follow import follow

if TYPE_CHECKING:  # the job file's model imports torch, which `resilient --help` never needs
    from ..config import SweepSpec

_FOLLOWED_TO_SUCCESS = (State.COMPLETED, State.CANCELLED)  # a cancelled job did what its user asked

SUBMIT_EXAMPLES = """\
examples:
  resilient submit examples/quickstart.yaml --follow
  resilient submit job.yaml -o args.lr=0.1 -o resources.nodes=2 --executor slurm
  resilient submit job.yaml --dry-run > job.sbatch && sbatch --test-only job.sbatch
  resilient submit sweep.yaml            # a file with a sweep: one SLURM array, or a local job per task

Submitting a file again resumes its run from the latest valid checkpoint, once the previous
job has ended; --fresh moves the old run directory aside (nothing is deleted) and starts over.
"""


def add_parsers(commands: argparse._SubParsersAction) -> None:
    submit = commands.add_parser(
        "submit", help="submit the job a YAML file describes", epilog=SUBMIT_EXAMPLES,
        description="Validate JOB.yaml, then submit it through submitit (local, slurm or debug executor).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    submit.add_argument("job_file", metavar="JOB.yaml", help="the job file (see `resilient schema`)")
    submit.add_argument("-o", "--override", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="change one value of the file, e.g. -o args.lr=0.1 or -o checkpoint[0].save_top_k=3")
    submit.add_argument("--executor", choices=EXECUTORS, help="run with this executor instead of the file's")
    submit.add_argument("--dry-run", action="store_true",
                        help="validate and print the batch script (slurm) or the resolved file; submit nothing")
    submit.add_argument("-f", "--follow", action="store_true",
                        help="stream rank 0's log and the run's events until the job ends; exit 0 if it "
                             "completed or was cancelled, 1 if it failed, gave up or was lost")
    submit.add_argument("--fresh", action="store_true",
                        help="start over instead of resuming: move the previous run directory aside")
    submit.set_defaults(handler=_submit)

    schema = commands.add_parser(
        "schema", help="print the JSON Schema of job files, for editors",
        description="Print a JSON Schema (draft 2020-12) describing job.yaml files.",
        epilog="example:\n  resilient schema > resilient-job.schema.json\n"
               "  # then, in VS Code's YAML extension: # yaml-language-server: $schema=resilient-job.schema.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    schema.set_defaults(handler=_schema)


def _schema(args: argparse.Namespace) -> int:
    from ..config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def _submit(args: argparse.Namespace) -> int:
    import yaml

    from ..config import SweepSpec, load_job_file
    from ..submission import batch_script, launch

    spec = load_job_file(args.job_file, args.override, args.executor)
    if isinstance(spec, SweepSpec):
        return _submit_sweep(args, spec)
    options = spec.options
    run_dir = options.resolved_run_dir(spec.name)
    if args.dry_run:
        if options.executor == "slurm":
            print(batch_script(options, submitit_folder(run_dir), spec.name), end="")
        else:
            print(f"# {options.executor} executor: no batch script; the resolved job file:")
            print(yaml.safe_dump(spec.resolved, sort_keys=False), end="")
        say(f"{args.job_file} is valid; nothing was submitted (--dry-run)")
        return EXIT_OK
    try:
        handle = launch(spec.function, options, name=spec.name, kwargs=spec.args,
                        fire_drill_step=spec.fire_drill_step, config=spec.resolved, fresh=args.fresh)
    except SlurmUnavailable as error:
        raise UsageError(f"{error}; use --executor local or --dry-run") from None
    print(f"submitted job {handle.job_id} ({options.executor}), run directory {run_dir}")
    if options.executor == "debug":  # the debug executor runs the job here, now
        handle.result()
        return EXIT_OK
    if not args.follow:
        print(f"  resilient status {run_dir}\n  resilient logs {run_dir} -f\n  resilient cancel {run_dir}")
        return EXIT_OK
    state = follow(handle)
    say(f"job {handle.job_id} {ended(state, handle.status.message)}")
    return EXIT_OK if state in _FOLLOWED_TO_SUCCESS else EXIT_JOB_FAILED


def _task_table(spec: SweepSpec) -> str:
    """The sweep's tasks, one per line: array index, directory name, overrides."""
    rows = [[str(index), task.name, " ".join(f"{key}={value}" for key, value in task.overrides.items())]
            for index, task in enumerate(spec.tasks)]
    return table(("TASK", "DIRECTORY", "OVERRIDES"), rows)


def _submit_sweep(args: argparse.Namespace, spec: SweepSpec) -> int:
    """A sweep: one SLURM array, or one local job per task; --follow is for one job."""
    from ..submission import SweepTaskLaunch, batch_script, launch_sweep

    if args.follow:
        raise UsageError(f"--follow streams one job; {args.job_file} is a sweep of {len(spec.tasks)} tasks: "
                         f"watch it with resilient status {spec.run_dir}")
    first = spec.tasks[0].spec
    if args.dry_run:
        if spec.executor == "slurm":
            parallel = spec.max_parallel or len(spec.tasks)
            print(batch_script(first.options, submitit_folder(spec.run_dir), spec.name, (len(spec.tasks), parallel)),
                  end="")
        else:
            print(f"# {spec.executor} executor: no batch script; one job per task")
        print("\n".join(f"# {line}" for line in _task_table(spec).splitlines()))
        say(f"{args.job_file} is valid: a sweep of {len(spec.tasks)} tasks in {spec.run_dir}; nothing was "
            "submitted (--dry-run)")
        return EXIT_OK
    tasks = [SweepTaskLaunch(name=task.name, overrides=task.overrides, options=task.spec.options,
                             kwargs=task.spec.args, fire_drill_step=task.spec.fire_drill_step,
                             config=task.spec.resolved) for task in spec.tasks]
    try:
        handles = launch_sweep(first.function, tasks, sweep_dir=spec.run_dir, name=spec.name,
                               max_parallel=spec.max_parallel, config=spec.resolved, fresh=args.fresh)
    except SlurmUnavailable as error:
        raise UsageError(f"{error}; use --executor local or --dry-run") from None
    jobs = f"array job {handles[0].job_id.partition('_')[0]}" if spec.executor == "slurm" else "local jobs"
    print(f"submitted a sweep of {len(handles)} tasks ({jobs}), sweep directory {spec.run_dir}")
    print(_task_table(spec))
    print(f"  resilient status {spec.run_dir}\n  resilient cancel {spec.run_dir}")
    return EXIT_OK
