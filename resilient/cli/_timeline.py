"""The goodput timeline as a picture: one row per start of a run (or per task of a sweep).

A table says how much time each part took; the picture says when, and so what caused it: a long
queue after each requeue, a restore that grows, checkpoints that stall more as the state grows.
matplotlib is the optional `report` extra: this module is imported only when a picture is asked
for, and imports it inside, so that no other command ever loads it (nor torch: it needs none).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..rundir import Lane, Part

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_COLOURS = {
    Part.TRAINING: "#2ca02c", Part.QUEUED: "#c7c7c7", Part.RESTORING: "#1f77b4", Part.CHECKPOINTING: "#ff7f0e",
    Part.STOPPING: "#d62728", Part.REDONE: "#9467bd", Part.OTHER: "#8c564b",
}
_UNITS = ((3 * 3600, 3600, "hours"), (3 * 60, 60, "minutes"), (0, 1, "seconds"))


def timeline_figure(rows: Sequence[tuple[str, Lane]], title: str = "") -> Figure:
    """A figure with one row per (label, lane), top to bottom, on one time axis from the earliest
    segment: the parts as coloured bars, stop signals as triangles above, checkpoints as ticks below.

    A run passes one lane per start (`Goodput.lanes`); a sweep one per task (`Goodput.lane()`).
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if not rows:
        raise ValueError("a timeline needs at least one row")
    segments = [segment for _, lane in rows for segment in lane.segments]
    origin = min((segment.begin for segment in segments), default=0.0)
    span = max((segment.end for segment in segments), default=origin) - origin
    scale, unit = next((scale, unit) for least, scale, unit in _UNITS if span >= least)
    figure = Figure(figsize=(10, 1.6 + 0.45 * len(rows)), layout="constrained")
    axes = figure.add_subplot()
    for y, (_, lane) in enumerate(rows):
        axes.broken_barh([((segment.begin - origin) / scale, segment.seconds / scale) for segment in lane.segments],
                         (y - 0.35, 0.7), facecolors=[_COLOURS[segment.part] for segment in lane.segments])
        axes.plot([(moment - origin) / scale for moment in lane.signals], [y - 0.42] * len(lane.signals), "v",
                  color="black", markersize=6)
        axes.plot([(moment - origin) / scale for moment in lane.checkpoints], [y + 0.42] * len(lane.checkpoints), "|",
                  color="black", markersize=7)
    axes.set_yticks(range(len(rows)), labels=[label for label, _ in rows])
    axes.set_ylim(len(rows) - 0.4, -0.6)  # the first row on top
    axes.set_xlabel(f"{unit} since the first submission or start")
    if title:
        axes.set_title(title)
    shown = [part for part in _COLOURS if any(segment.part == part for segment in segments)]
    handles = [Patch(color=_COLOURS[part], label=part.value) for part in shown]
    handles += [Line2D([], [], marker="v", color="black", linestyle="", label="stop signal"),
                Line2D([], [], marker="|", color="black", linestyle="", label="checkpoint")]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), frameon=False)
    return figure


def write_png(rows: Sequence[tuple[str, Lane]], path: Path, title: str = "") -> None:
    """Draw `rows` (see `timeline_figure`) into the PNG file `path`."""
    timeline_figure(rows, title).savefig(path, format="png", dpi=100)
