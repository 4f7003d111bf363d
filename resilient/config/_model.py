"""The job file's keys, their types, defaults and documentation, as pydantic models.

pydantic v2 because one set of definitions yields both the validation, with the precise location
of every mistake, and the JSON Schema that `resilient schema` prints for editors; hand-written
checks would need a second schema that drifts from them. Models are strict (`"3"` is not an int,
`1.0` is not an int, `true` is not a number) and forbid unknown keys: in a job file a lenient
coercion or an ignored typo changes a run silently.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from ..loop import OnSaveError
from ..requeue import DEFAULT_NOTIFY_ON, DEFAULT_NOTIFY_TIMEOUT_S, MAX_NOTIFY_TIMEOUT_S, NOTIFY_STATES
from ..settings import (
    DEFAULT_WARNING_SIGNAL,
    LOCAL_TASKS_PER_CPU,
    MAX_CPUS_PER_TASK,
    MAX_GPUS_PER_NODE,
    MAX_MEM_GB,
    MAX_NODES,
    MAX_SWEEP_TASKS,
    MAX_TASKS_PER_NODE,
)
from ..submission import EXECUTORS
from . import _sweep
from ._values import (
    Entrypoint,
    FireDrillStep,
    Minutes,
    Name,
    Nodes,
    NotifyCommand,
    NotifyStates,
    NotifyTimeout,
    OptionName,
    OptionValue,
    SafeToken,
    Seconds,
    Signal,
    Webhook,
    count,
)

SAVE_ERROR_CHOICES = tuple(choice.value for choice in OnSaveError)

# Counts with their bounds (from resilient.settings); `count` applies the rule `JobOptions` applies too.
TasksPerNode = count(1, MAX_TASKS_PER_NODE)
GpusPerNode = count(0, MAX_GPUS_PER_NODE)
CpusPerTask = count(1, MAX_CPUS_PER_TASK)
MemGb = count(1, MAX_MEM_GB)
Requeues = count(0)
MaxParallel = count(1, MAX_SWEEP_TASKS)
SweepKey = Annotated[str, AfterValidator(_sweep.check_key), WithJsonSchema(
    {"type": "string", "pattern": f"^{_sweep.SWEEP_KEY.pattern}$"})]
SweepValue = Annotated[Any, AfterValidator(_sweep.check_value), WithJsonSchema(
    {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "null"},
               {"type": "string", "pattern": "^[A-Za-z0-9_.+-]{1,64}$"}]})]
SweepValues = Annotated[list[SweepValue], AfterValidator(_sweep.check_values)]
SweepTask = Annotated[dict[SweepKey, SweepValue], AfterValidator(_sweep.check_task)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Resources(_Section):
    """What the job asks the cluster for.

    The upper bounds are far beyond any real node; they turn a typo (an extra three zeros)
    into an error here instead of a job that never starts, or a million processes on this machine.
    """

    nodes: Nodes = Field(1, description=(
        f"Nodes (1 to {MAX_NODES}), or a range 'MIN-MAX' such as '1-2' (as sbatch --nodes=MIN-MAX): "
        "SLURM starts the job on as many nodes of the range as it can, and a requeued job resumes on "
        "however many it gets then. More than one needs executor slurm."))
    tasks_per_node: TasksPerNode = Field(1, description=(
        f"Processes per node, one per rank (1 to {MAX_TASKS_PER_NODE}); the local executor runs at most "
        f"{LOCAL_TASKS_PER_CPU} per CPU of the machine."))
    gpus_per_node: GpusPerNode = Field(0, description=(
        f"GPUs per node (0 to {MAX_GPUS_PER_NODE})."))
    cpus_per_task: CpusPerTask | None = Field(None, description=(
        f"CPUs per process (1 to {MAX_CPUS_PER_TASK}), or null for the cluster's default."))
    mem_gb: MemGb | None = Field(None, description=(
        f"Memory per node in GB (1 to {MAX_MEM_GB}), or null for the cluster's default."))
    time: Minutes = Field(60, description=(
        "Time limit: an integer is minutes (as sbatch --time), or a duration such as '4h' or "
        "'1h30m'; whole minutes, from 1 minute to 365 days."))


class Slurm(_Section):
    """SLURM settings; ignored by the local and debug executors."""

    partition: SafeToken | None = Field(None, description="Partition (sbatch --partition), or null for the default.")
    account: SafeToken | None = Field(None, description="Account to charge (sbatch --account), or null.")
    qos: SafeToken | None = Field(None, description="Quality of service (sbatch --qos), or null.")
    signal: Signal = Field(DEFAULT_WARNING_SIGNAL, description=(
        "Warning signal SLURM sends before the time limit, by name ('USR2', 'SIGUSR1') or number: "
        "one the job can catch and that means nothing else to it, such as USR1, USR2, TERM or "
        "HUP. KILL and STOP (uncatchable), INT (Ctrl-C), CHLD, CONT, job control and fault "
        "signals are refused."))
    signal_delay: Seconds = Field(120, description=(
        "How long before the time limit the warning signal comes: an integer is seconds, or a "
        "duration such as '2m'; shorter than resources.time."))
    options: dict[OptionName, OptionValue] = Field(default_factory=dict, description=(
        "Extra #SBATCH options, e.g. {constraint: a100, exclusive: true}: names are lowercase "
        "sbatch options, values plain tokens, numbers, or true for a flag. Options resilient sets "
        "itself (time, signal, requeue, output, job-name, ...) are refused with the key to use instead."))


class Checkpoint(_Section):
    """One ModelCheckpoint rule; the keys are its constructor's parameters, as in Lightning."""

    dirpath: SafeToken | None = Field(None, description=(
        "Directory of this rule's checkpoints (relative: from the current directory); null: "
        "<run_dir>/checkpoints."))
    filename: str | None = Field(None, description=(
        "Name template, e.g. '{epoch:02d}-{val_loss:.2f}'; null: '{epoch}-{step}'."))
    monitor: str | None = Field(None, description="Logged metric to rank checkpoints by; null: keep the latest.")
    verbose: bool = Field(False, description="Log each save and deletion.")
    save_last: Literal[True, False, "link"] | None = Field(None, description=(
        "Also keep 'last.ckpt' (true), as a link to the newest top-k file ('link'), or not."))
    save_top_k: int = Field(1, ge=-1, description="How many best checkpoints to keep: -1 all, 0 none, k best.")
    save_weights_only: bool = Field(False, description="Save only the model's weights.")
    mode: Literal["min", "max"] = Field("min", description="Whether a lower or a higher monitored value is better.")
    auto_insert_metric_name: bool = Field(True, description="Write 'name=' before each metric in file names.")
    every_n_train_steps: int | None = Field(None, ge=0, description="Save every N training steps (0: never).")
    train_time_interval: str | None = Field(None, description="Save at this interval, a duration such as '30m' or '1h30m'.")
    every_n_epochs: int | None = Field(None, ge=0, description=(
        "Save every N epochs (0: never); when no trigger is set, every epoch."))
    save_on_train_epoch_end: bool | None = Field(None, description=(
        "Run the epoch trigger at the end of the training epoch rather than after validation."))
    enable_version_counter: bool = Field(True, description="Add '-v1', '-v2', ... instead of overwriting a name in use.")
    async_save: bool | None = Field(None, description=(
        "Write this rule's checkpoints in the background (true) or before training goes on (false); "
        "null: as the job's async_save says."))


class Requeue(_Section):
    """How often the job may come back on its own."""

    max_requeues: Requeues | None = Field(None, description=(
        "Requeues after preemption or the time limit (>= 0); null: no bound."))
    max_crash_requeues: Requeues = Field(0, description=(
        "Requeues after an exception in the training code (>= 0); 0: a crash ends the job."))


class FireDrill(_Section):
    """Preempt the job once, on purpose, to see it come back."""

    preempt_at_step: FireDrillStep | None = Field(None, description=(
        "The training step (>= 1) at which the drill preempts the job; null: no drill."))


class Notify(_Section):
    """Who to tell when a start of the job ends: a command and/or a webhook, called by rank 0 after
    the state is recorded. Its failure never changes the job (a warning and a notify_failed event)."""

    command: NotifyCommand | None = Field(None, description=(
        "A program and its arguments, as a list or a string split into words as a shell would "
        "(no shell runs it: write ['sh', '-c', '...'] for one). It gets RESILIENT_EVENT, "
        "RESILIENT_STATE, RESILIENT_RUN_DIR, RESILIENT_JOB_ID, RESILIENT_NAME, RESILIENT_MESSAGE, "
        "RESILIENT_STEP and RESILIENT_STATUS_LINE in its environment."))
    webhook: Webhook | None = Field(None, description=(
        "An http:// or https:// URL that gets a JSON POST: text (the one-line status, which Slack and "
        "Mattermost incoming webhooks show as it is), event, state, run_dir, job_id, name, message, step."))
    on: NotifyStates = Field([str(state) for state in DEFAULT_NOTIFY_ON], description=(
        f"The ends to tell of: some of {', '.join(NOTIFY_STATES)}."))
    timeout: NotifyTimeout = Field(DEFAULT_NOTIFY_TIMEOUT_S, description=(
        f"Seconds (or a duration such as '30s') the notification may take, at most {MAX_NOTIFY_TIMEOUT_S}; "
        "a command still running then is killed with its process group. Before a requeue it gets at "
        "most the time left before the job's end, less 10 s."))


class Sweep(_Section):
    """Many runs of this job, with different args: one SLURM array, or one local job per task.

    Each task runs in its own run directory inside run_dir, named from its values
    ('lr=0.001,seed=0'). The short form {args.lr: [...], args.seed: [...]} is a grid.
    """

    grid: dict[SweepKey, SweepValues] = Field(default_factory=dict, description=(
        "args keys ('args.NAME' or 'args.NAME.SUB') and the values each takes: every combination is a "
        "task, in the order written, the last key varying fastest. Values are numbers, true, false, null "
        "or plain strings (letters, digits, '_', '.', '+', '-'), which name the task's directory."))
    tasks: list[SweepTask] = Field(default_factory=list, description=(
        "More tasks, each a mapping of args keys to values, after the grid's."))
    max_parallel: MaxParallel | None = Field(None, description=(
        f"SLURM: at most this many tasks run at once (sbatch --array=0-N%max_parallel); null: no limit. "
        f"The local executor starts every task at once and refuses a lower limit. At most {MAX_SWEEP_TASKS} "
        "tasks in all."))


class JobFile(_Section):
    """A resilient job: what to run, where, with what, and how it may come back."""

    name: Name | None = Field(None, description=(
        "Job name: a letter or digit, then letters, digits, '_', '.' or '-'; at most 64 "
        "characters. Default: the entrypoint function's name."))
    entrypoint: Entrypoint = Field(description=(
        "The training function, 'package.module:function', imported with the current directory "
        "first on sys.path (as python -m would). It takes the Run as its first parameter."))
    args: dict[str, Any] = Field(default_factory=dict, description=(
        "Keyword arguments for the function (after run), checked against its signature."))
    executor: Literal[EXECUTORS] = Field("local", description=(
        "Where the job runs: local (this machine, the default), slurm, or debug (in this process)."))
    run_dir: SafeToken | None = Field(None, description=(
        "Directory of the run's logs and checkpoints (relative: from the current directory). "
        "Default: runs/<name>."))
    resources: Resources = Field(default_factory=Resources, description=Resources.__doc__)
    slurm: Slurm = Field(default_factory=Slurm, description=Slurm.__doc__)
    checkpoint: list[Checkpoint] | None = Field(None, description=(
        "One ModelCheckpoint rule or a list of them; none: the default rule (every epoch)."))
    on_save_error: Literal[SAVE_ERROR_CHOICES] = Field("stop", description=(
        "What a failed periodic save (a full disk, a quota) does: stop (fail, naming the cause) or "
        "continue (warn and try again at the next save a rule schedules)."))
    async_save: bool = Field(True, description=(
        "Write checkpoints in the background after copying the state to host memory (as much "
        "memory again as the state); false: every save finishes before training goes on."))
    requeue: Requeue = Field(default_factory=Requeue, description=Requeue.__doc__)
    fire_drill: FireDrill | None = Field(None, description=FireDrill.__doc__)
    notify: Notify | None = Field(None, description=Notify.__doc__)
    sweep: Sweep | None = Field(None, description=Sweep.__doc__)


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the job file, for editors and `resilient schema`."""
    schema = JobFile.model_json_schema()
    # The loader accepts a single checkpoint mapping and wraps it into a list before validation;
    # the schema says so, or an editor would flag the short form that the docs recommend.
    schema["properties"]["checkpoint"]["anyOf"].insert(0, {"$ref": "#/$defs/Checkpoint"})
    # The short form of a sweep, its grid's keys written in the sweep itself: {args.lr: [...], max_parallel: 2}.
    sweep = schema["$defs"]["Sweep"]["properties"]
    short = {"type": "object", "patternProperties": sweep["grid"]["patternProperties"],
             "properties": {key: sweep[key] for key in ("tasks", "max_parallel")}, "additionalProperties": False}
    schema["properties"]["sweep"]["anyOf"].insert(1, short)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
