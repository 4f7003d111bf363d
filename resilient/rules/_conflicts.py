"""Rules that cannot share a run: the same identity, the same files, or the emergency directory.

Each rule can be valid on its own and still clash with another rule of the same run, or with
the directory where the run keeps its emergency checkpoints. `Run` refuses such a set when it
starts and the job file's validation refuses it before anything is submitted; both call
`check_rule_set`, so both refuse the same sets with the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from resilient.rules._identity import identity_key
from resilient.rules.model_checkpoint import ModelCheckpoint, _resolve


class RuleConflict(ValueError):
    """A rule that cannot run alongside the others: `index` is its place in the list and
    `parameter` the setting to change (None: the rule as a whole)."""

    def __init__(self, index: int, parameter: str | None, problem: str) -> None:
        super().__init__(f"checkpoint[{index}]: {problem}")
        self.index = index
        self.parameter = parameter
        self.problem = problem


def check_rule_set(
    rules: Sequence[ModelCheckpoint], *, default_dirpath: Path, emergency_dir: Path
) -> None:
    """Refuse rules that would get in each other's way in one run; raises `RuleConflict`.

    `default_dirpath` is where a rule without `dirpath` writes (`<run_dir>/checkpoints`),
    `emergency_dir` where the run writes its emergency checkpoints. Refused: two rules with the
    same identity (`identity`, which a resumed run uses to give each rule its bookkeeping back), two
    rules writing the same names into one directory without the version counter (each would
    overwrite and delete the other's files), and a rule writing into the emergency directory
    (whose checkpoints the run manages alone).
    """
    emergency = Path(_resolve(emergency_dir))
    keys: dict[str, int] = {}
    names: dict[tuple[str, str], int] = {}
    for index, rule in enumerate(rules):
        directory = rule.dirpath or _resolve(default_dirpath)
        if Path(directory).is_relative_to(emergency):
            where = "" if Path(directory) == emergency else f"is inside {emergency}, which "
            raise RuleConflict(index, "dirpath", (
                f"dirpath {directory} {where}is where the run keeps its emergency checkpoints; "
                "choose another dirpath"))
        first = keys.setdefault(identity_key(rule.identity), index)
        if first != index:
            raise RuleConflict(index, None, (
                f"has the same monitor, mode, triggers and filename as checkpoint[{first}]; a run "
                "tells its rules apart by these (not by dirpath, so that a moved run still "
                "resumes): change one, or drop the rule"))
        for template in _templates(rule):
            other = names.setdefault((directory, template), index)
            if other != index and not (rule.enable_version_counter and rules[other].enable_version_counter):
                parameter = "dirpath" if template == rule.CHECKPOINT_NAME_LAST else "filename"
                raise RuleConflict(index, parameter, (
                    f"writes {template!r} checkpoints into {directory}, as checkpoint[{other}] "
                    "does, without the version counter (enable_version_counter), so each would "
                    "overwrite and delete the other's files; give it another filename or dirpath"))


def _templates(rule: ModelCheckpoint) -> list[str]:
    """The name templates a rule writes: its top-k (or latest) files and `last`."""
    templates = [] if rule.save_top_k == 0 else [rule.filename or rule._default_template()]
    if rule.save_last:
        templates.append(rule.CHECKPOINT_NAME_LAST)
    return templates
