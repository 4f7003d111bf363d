"""`resilient report RUN`: where the run's wall time went, what each interruption cost, as a picture.

`status` shows one number per run (goodput %); this shows the partition behind it
(`rundir.goodput`): the parts with their seconds and shares of the wall time, and each
interruption with its cause and the steps it lost. `--json` prints the same for scripts, and
`--png` draws the timeline with matplotlib, the optional `report` extra, imported only then.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..rundir import Goodput, Part, read_history, read_record, read_status
from ._common import EXIT_OK, UsageError, find_run, table
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
    report.add_argument("run", metavar="RUN", help="a run directory, or a run's name under ./runs")
    report.add_argument("--json", action="store_true", help="print the breakdown as JSON")
    report.add_argument("--png", type=Path, metavar="FILE", help="draw the timeline, one row per start, into FILE")
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    if args.png is not None:
        try:
            import matplotlib  # noqa: F401 - only to say what to install before doing anything
        except ImportError:
            raise UsageError(f"--png needs matplotlib: {EXTRA}") from None
    run_dir = find_run(args.run)
    history = read_history(run_dir)
    if history.damage is not None:
        raise history.damage
    state = run_state(run_dir, read_record(run_dir), read_status(run_dir))
    result = run_goodput(run_dir, history.events, state)
    if args.json:
        print(json.dumps({"run": str(run_dir), "state": state, **result.to_json()}, indent=2))
    else:
        print(_text(run_dir, state, result))
    if args.png is not None:
        from ._timeline import write_png

        write_png([(f"start {number}", lane) for number, lane in enumerate(result.lanes, start=1)], args.png,
                  title=f"{run_dir.name}: goodput {percent(result)}")
        print(f"resilient: timeline written to {args.png}", file=sys.stderr)
    return EXIT_OK


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
