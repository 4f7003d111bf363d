"""`resilient report RUN`: where the run's wall time went, what each interruption cost, as a picture.

`status` shows one number per run (goodput %); this shows the partition behind it
(`rundir.goodput`): the parts with their seconds and shares of the wall time, and each
interruption with its cause and the steps it lost. `--json` prints the same for scripts, and
`--png` draws the timeline with matplotlib, the optional `report` extra, imported only then.
On a sweep's directory the same is shown per task (one row, one lane each) and summed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from ..rundir import Goodput, Lane, Part, is_run_dir, read_history, read_record, read_status, read_sweep
from ._common import EXIT_OK, UsageError, find_run_or_sweep, table
from ._inspect import percent, run_goodput, run_state

EXTRA = "pip install 'resilient[report]'"
_LOSSES = (Part.QUEUED, Part.RESTORING, Part.CHECKPOINTING, Part.STOPPING, Part.REDONE, Part.OTHER)


def add_parsers(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report", help="goodput: where a run's wall time went, and what each interruption cost",
        description="Break RUN's wall time (first submission to end, or to now while it runs) into training "
                    "and what was lost to the queue, restoring, checkpoint stalls, stopping and redoing the "
                    "steps a kill lost; list each interruption with its cause and steps lost.",
        epilog="examples:\n  resilient report quickstart\n  resilient report runs/quickstart --json\n"
               "  resilient report quickstart --png timeline.png   # needs: " + EXTRA,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("run", metavar="RUN", help="a run or sweep directory, or its name under ./runs")
    report.add_argument("--json", action="store_true", help="print the breakdown as JSON")
    report.add_argument("--png", type=Path, metavar="FILE",
                        help="draw the timeline into FILE: one row per start (a sweep: one per task)")
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    if args.png is not None:
        try:
            import matplotlib  # noqa: F401 - only to say what to install before doing anything
        except ImportError:
            raise UsageError(f"--png needs matplotlib: {EXTRA}") from None
    path = find_run_or_sweep(args.run)
    if not is_run_dir(path):
        return _report_sweep(path, args)
    state, result = _measured(path)
    if args.json:
        print(json.dumps({"run": str(path), "state": state, **result.to_json()}, indent=2))
    else:
        print(_text(path, state, result))
    if args.png is not None:
        _draw([(f"start {number}", lane) for number, lane in enumerate(result.lanes, start=1)], args.png,
              f"{path.name}: goodput {percent(result)}")
    return EXIT_OK


def _measured(run_dir: Path) -> tuple[str, Goodput]:
    """The run's state and goodput; its damaged events file is raised (one line, exit 1)."""
    history = read_history(run_dir)
    if history.damage is not None:
        raise history.damage
    state = run_state(run_dir, read_record(run_dir), read_status(run_dir))
    return state, run_goodput(run_dir, history.events, state)


def _report_sweep(sweep_dir: Path, args: argparse.Namespace) -> int:
    """Each submitted task's goodput, a row each, and the sweep's parts summed over its tasks."""
    sweep = read_sweep(sweep_dir)
    assert sweep is not None
    tasks = [(task.name, *_measured(task.run_dir)) for task in sweep.tasks if is_run_dir(task.run_dir)]
    if not tasks:
        raise UsageError(f"no task of the sweep {sweep_dir} was submitted yet")
    parts = {part: sum(result.parts[part] for _, _, result in tasks) for part in Part}
    wall = sum(result.wall for _, _, result in tasks)
    share = round(100 * parts[Part.TRAINING] / wall, 2) if wall > 0 else None
    if args.json:
        print(json.dumps({"sweep": str(sweep_dir), "goodput_percent": share, "wall_seconds": round(wall, 3),
                          "parts": {part.value: round(seconds, 3) for part, seconds in parts.items()},
                          "tasks": [{"task": name, "run": str(sweep_dir / name), "state": state, **result.to_json()}
                                    for name, state, result in tasks]}, indent=2))
    else:
        rows = [[name, state, f"{result.wall:.1f}", percent(result), str(len(result.interruptions)),
                 _known(_total(each.steps_lost for each in result.interruptions))] for name, state, result in tasks]
        print(f"sweep {sweep_dir.name}: {len(tasks)} of {len(sweep.tasks)} task(s) submitted, "
              f"{wall:.1f} s of wall time in all, goodput {'-' if share is None else f'{share:.1f}%'}\n")
        print(table(("TASK", "STATE", "WALL (s)", "GOODPUT", "INTERRUPTIONS", "STEPS LOST"), rows))
    if args.png is not None:
        _draw([(name, result.lane()) for name, _, result in tasks], args.png,
              f"{sweep_dir.name}: goodput {'-' if share is None else f'{share:.1f}%'}")
    return EXIT_OK


def _total(counts: Iterable[int | None]) -> int | None:
    """The sum of known counts; None if one is unknown."""
    known = list(counts)
    return None if None in known else sum(count for count in known if count is not None)


def _draw(rows: list[tuple[str, Lane]], path: Path, title: str) -> None:
    from ._timeline import write_png

    write_png(rows, path, title=title)
    print(f"resilient: timeline written to {path}", file=sys.stderr)


def _share(seconds: float, wall: float) -> str:
    return f"{100 * seconds / wall:.1f}" if wall > 0 else "-"


def _text(run_dir: Path, state: str, result: Goodput) -> str:
    starts = len([lane for lane in result.lanes if lane.segments])
    lines = [f"{run_dir.name}: {state}, {starts} start(s), wall time {result.wall:.1f} s"
             f"{' so far' if result.live else ''}, goodput {percent(result)}", ""]
    rows = [[f"{part.value}" + (" (productive)" if part is Part.TRAINING else ""), f"{result.parts[part]:.1f}",
             _share(result.parts[part], result.wall)] for part in (Part.TRAINING, *_LOSSES)]
    rows.append(["wall time", f"{result.wall:.1f}", _share(result.wall, result.wall)])
    lines.append(table(("PART", "SECONDS", "%"), rows))
    if result.interruptions:
        lines += ["", table(("START", "CAUSE", "AT (s)", "STEP", "RESUMED AT", "STEPS LOST"), [
            [str(each.start), each.cause, f"{each.time - result.began:.1f}", _known(each.step),
             _known(each.resumed_at), _known(each.steps_lost)] for each in result.interruptions])]
    return "\n".join(lines)


def _known(value: int | None) -> str:
    return "?" if value is None else str(value)
