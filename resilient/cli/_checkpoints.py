"""`resilient checkpoints DIR [--verify]`: every checkpoint under a directory, and whether it is sound.

Reading manifests and hashing files needs no torch (`checkpoint/` imports it only for
`load_files` and `write_checkpoint`, which this command never reads), so listing, `--verify`
included, starts in a fraction of a second. `checkpoint/` itself is imported when the command
runs, so that `resilient --help` does not pay for it.

What counts as a checkpoint is one rule, by name, so that what a kill left half-written is listed
as not valid instead of left out: every entry named ``*.ckpt`` (ours) and every ``checkpoint-N``
(Hugging Face's Trainer, sealed with a manifest by `resilient.integrations.huggingface`), not
descending into either; dot-names are leftovers and temporaries, never listed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ._common import EXIT_JOB_FAILED, EXIT_OK, UsageError, size, table

# The directory name transformers' Trainer gives each save (`PREFIX_CHECKPOINT_DIR`, "checkpoint", then
# "-N"), written out: importing transformers would cost the command seconds.
_TRAINER_PREFIX = "checkpoint-"
_HEADERS = ("CHECKPOINT", "STEP", "EPOCH", "RULE", "METRICS", "SIZE", "CREATED", "VALID")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    checkpoints = commands.add_parser(
        "checkpoints", help="list checkpoints with step, metrics and validity",
        description="List every checkpoint under DIR (a run directory or any checkpoint folder), newest "
                    "step first: each entry named *.ckpt, and each Hugging Face Trainer checkpoint-N directory. "
                    "Exit code 1 if one of them is not valid (one without its manifest is what a kill left "
                    "mid-save).",
        epilog="examples:\n  resilient checkpoints runs/quickstart\n  resilient checkpoints runs/quickstart --verify",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    checkpoints.add_argument("directory", metavar="DIR", help="where to look, recursively")
    checkpoints.add_argument("--verify", action="store_true",
                             help="re-check every file's checksum (reads everything), not only sizes")
    checkpoints.set_defaults(handler=_checkpoints)


def _rule_label(rule: str | Mapping[str, Any]) -> str:
    """A rule's identity (what its manifest stores) in a few words.

    A string is shown as it is: "emergency", "manual", or an older checkpoint's rule.
    """
    if isinstance(rule, str):
        return rule
    parts = []
    if rule.get("every_n_train_steps"):
        parts.append(f"every {rule['every_n_train_steps']} steps")
    if rule.get("every_n_epochs"):
        parts.append(f"every {rule['every_n_epochs']} epochs")
    interval = rule.get("train_time_interval_s")
    if interval:
        try:
            parts.append(f"every {timedelta(seconds=interval)}")
        except (TypeError, ValueError, OverflowError):  # a manifest written by something else: show it as stored
            parts.append(f"every {interval!r:.40} s")
    if rule.get("monitor"):
        parts.append(f"by {rule['monitor']} ({rule.get('mode')})")
    return ", ".join(parts) or "rule"


def _walk(directory: Path, suffix: str) -> Iterator[Path]:
    """Every ``*.ckpt`` (`suffix`) and ``checkpoint-N`` entry under `directory`, not descending into
    checkpoints or dot-names (temporaries, leftovers).

    Entries that are not directories (a file, a dangling link, a link loop, a FIFO) are listed
    too, for `verify` to say what is wrong with them: a checkpoint folder should hold none.
    """
    def listed(name: str) -> bool:
        step = name.removeprefix(_TRAINER_PREFIX)
        return name.endswith(suffix) or (step != name and step.isascii() and step.isdigit())

    for root, subdirs, files in os.walk(directory):
        for name in sorted(subdirs + files):
            if listed(name) and not name.startswith("."):
                yield Path(root) / name
        subdirs[:] = [name for name in subdirs if not listed(name) and not name.startswith(".")]


def _checkpoints(args: argparse.Namespace) -> int:
    from ..checkpoint import CHECKPOINT_SUFFIX, CheckpointError, verify

    directory = Path(args.directory)
    if not directory.is_dir():
        raise UsageError(f"{args.directory}: no such directory")
    rows: list[tuple[tuple[int, float], list[str]]] = []
    invalid = 0
    for path in _walk(directory, CHECKPOINT_SUFFIX):
        name = str(path.relative_to(directory))
        if path.is_symlink():
            name += f" -> {os.readlink(path)}"
        try:
            manifest = verify(path, full=args.verify)
        except CheckpointError as error:
            invalid += 1
            reason = str(error).removeprefix(f"checkpoint {path}").removeprefix(":").strip()
            rows.append(((-1, 0.0), [name, "-", "-", "-", "-", "-", "-", f"NO: {reason}"]))
            continue
        metrics = " ".join(f"{key}={value:.4g}" for key, value in sorted(manifest.metrics.items()))
        rows.append(((manifest.step, manifest.created), [
            name, str(manifest.step), str(manifest.epoch), _rule_label(manifest.rule), metrics or "-",
            size(sum(entry.size for entry in manifest.files.values())),
            datetime.fromtimestamp(manifest.created).strftime("%Y-%m-%d %H:%M:%S"),
            "yes (checksums)" if args.verify else "yes",
        ]))
    if not rows:
        print(f"no checkpoints under {directory}")
        return EXIT_OK
    rows.sort(key=lambda item: item[0], reverse=True)
    print(table(_HEADERS, [row for _, row in rows]))
    return EXIT_JOB_FAILED if invalid else EXIT_OK
