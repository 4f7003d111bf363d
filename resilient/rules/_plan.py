"""The plan a rule hands to the ``Run`` loop, and the view of the directory used to build it.

Lightning writes and deletes while it decides, so each later decision of the same boundary
(the version counter of ``last``, say) sees the earlier ones on disk. ``ModelCheckpoint``
decides everything before anything is written, so that the checkpoint being written already
contains the bookkeeping that names it; ``PlanBuilder`` overlays the pending writes and
deletions on the real directory so that the decisions come out as Lightning's would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class SavePlan:
    """What the ``Run`` loop must do for one rule at one boundary, in this order.

    ``save`` paths are written first, then each ``(link_path, target_path)`` of ``link`` is made
    a symlink, and ``remove`` paths are deleted only once the new checkpoints are committed, so
    a crash in between leaves an extra file rather than a missing one.
    """

    save: list[str] = field(default_factory=list)
    link: list[tuple[str, str]] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


class PlanBuilder:
    """Collects a ``SavePlan`` while answering "does this path exist?" as if it were executed."""

    def __init__(self, exists: Callable[[str], bool]) -> None:
        self._exists = exists
        self._plan = SavePlan()
        self._created: set[str] = set()

    def exists(self, path: str) -> bool:
        if path in self._created:
            return True
        return path not in self._plan.remove and self._exists(path)

    def save(self, path: str) -> None:
        if path not in self._created:
            self._created.add(path)
            self._plan.save.append(path)

    def link(self, path: str, target: str) -> None:
        self._created.add(path)
        self._plan.link.append((path, target))

    def remove(self, path: str) -> None:
        """Schedule a deletion, unless this plan writes that path: Lightning would delete the
        file it has just written when two of its names collide; we keep it."""
        if path not in self._created and path not in self._plan.remove:
            self._plan.remove.append(path)

    def build(self) -> SavePlan:
        # A path removed first and written afterwards in the same plan must survive.
        self._plan.remove = [path for path in self._plan.remove if path not in self._created]
        return self._plan
