"""`resilient export CKPT OUT.pt`: a checkpoint as one plain file, for inference or sharing.

A checkpoint is a directory of files, sharded ones among them, that resilient (or DCP) reads; what
people hand on is one `torch.save` file that ``torch.load(weights_only=True)`` opens. This writes
what `load_checkpoint` returns, sharded state made whole on this one process (as DCP's
``dcp_to_torch_save`` does for a bare DCP checkpoint): ``{tracked name: state_dict, ...,
"resilient": metadata}``. OUT is written under a temporary name beside it, fsynced, then linked
into place, so it is either absent or whole, never half written; an existing OUT is kept unless
``--force``. torch is imported when the command runs, so the other commands do not pay for it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import warnings
from pathlib import Path
from typing import Any

from ._common import EXIT_JOB_FAILED, EXIT_OK, UsageError, say, size


def add_parsers(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export", help="write a checkpoint as one plain torch.save file",
        description="Write the checkpoint CKPT, sharded (FSDP) state made whole, as one torch.save file OUT "
                    "holding {tracked name: state_dict, ..., 'resilient': metadata}, which torch.load(OUT, "
                    "weights_only=True) reads. CKPT may also be a run directory or a folder of checkpoints: "
                    "its newest valid checkpoint. Exit code 1 if no valid checkpoint could be read.",
        epilog="examples:\n  resilient export runs/quickstart model.pt --only model\n"
               "  resilient export runs/quickstart/checkpoints/step=12.ckpt full.pt --force",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("checkpoint", metavar="CKPT", help="a checkpoint, or a run directory or checkpoint folder")
    export.add_argument("out", metavar="OUT.pt", help="the file to write")
    export.add_argument("--only", metavar="NAME", action="append",
                        help="export only this tracked object (repeatable), e.g. --only model")
    export.add_argument("--force", action="store_true", help="replace OUT if it exists")
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from ..checkpoint import CheckpointError

    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"{args.out} is a directory; name the file to write")
    if not out.parent.is_dir():
        raise UsageError(f"{args.out}: no such directory {out.parent}")
    if out.exists() and not args.force:
        raise UsageError(f"{args.out} exists; add --force to replace it")
    try:
        path, state = _load(Path(args.checkpoint), args.only)
        written = _write(state, out, force=args.force)
    except CheckpointError as error:
        print(f"resilient: error: {error}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except OSError as error:
        print(f"resilient: error: cannot write {args.out}: {error.strerror or error}", file=sys.stderr)
        return EXIT_JOB_FAILED
    names = ", ".join(name for name in state if name != "resilient")
    print(f"exported step {state['resilient']['step']} of {path} ({names}) to {args.out}, {size(written)}")
    return EXIT_OK


def _load(given: Path, only: list[str] | None) -> tuple[Path, dict[str, Any]]:
    """The checkpoint `given` loaded, or, for a folder, its newest one that loads (the others named)."""
    from ..checkpoint import CHECKPOINT_SUFFIX, MANIFEST_NAME, CheckpointError, UntrustedCheckpointError
    from ..loop import load_checkpoint

    def load(path: Path) -> dict[str, Any]:
        try:
            return load_checkpoint(path, only=only)
        except ValueError as error:  # --only names what the checkpoint lacks
            raise UsageError(str(error).removeprefix("load_checkpoint(): ")) from None

    if not given.exists() and not given.is_symlink():
        raise UsageError(f"{given}: no such checkpoint or directory")
    if given.name.endswith(CHECKPOINT_SUFFIX) or (given / MANIFEST_NAME).exists():
        return given, load(given)
    for path in _newest(given):
        try:
            return path, load(path)
        except UntrustedCheckpointError:
            raise  # sound but unsafe to load: not a reason to export an older one instead
        except CheckpointError as error:
            say(f"skipping checkpoint {path}: {error}")
    raise CheckpointError(f"no valid checkpoint in {given}")


def _newest(directory: Path) -> list[Path]:
    """The checkpoints of a run directory (its rules' and emergency ones) or of a folder, newest first."""
    from ..checkpoint import find_checkpoints
    from ..rundir import checkpoints_dir, emergency_dir, is_run_dir

    dirs = [checkpoints_dir(directory), emergency_dir(directory)] if is_run_dir(directory) else [directory]
    with warnings.catch_warnings(record=True) as caught:  # broken entries: one line each, not a warning's two
        warnings.simplefilter("always")
        found = find_checkpoints(dirs)
    for warning in caught:
        say(str(warning.message))
    return [path for path, _ in found]


def _write(state: dict[str, Any], out: Path, *, force: bool) -> int:
    """`torch.save(state)` to `out` in one durable step; the number of bytes written.

    The temporary file is complete and fsynced before it gets the name `out`; without `force`
    it gets it by a hard link, which fails rather than replace a file that appeared meanwhile.
    """
    import torch

    from ..rundir import fsync_dir

    temp = out.with_name(f".{out.name}.tmp-{secrets.token_hex(6)}")
    try:
        with open(temp, "xb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
            written = file.tell()
        if force:
            os.replace(temp, out)
        else:
            try:
                os.link(temp, out)
            except FileExistsError:
                raise UsageError(f"{out} exists; add --force to replace it") from None
        fsync_dir(out.parent)
    finally:
        temp.unlink(missing_ok=True)
    return written
