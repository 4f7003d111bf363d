"""What can go wrong with a checkpoint, as types callers can tell apart.

A checkpoint that is missing, damaged or forged is a `CheckpointError`: a reader skips it and
falls back to an older one. Storage that refuses a write (a full disk, a file size limit, a
read-only mount) is a `CheckpointWriteError`, an OSError: nothing was committed, older
checkpoints are intact, and the cause lies with the file system, not with the checkpoint.
"""

from __future__ import annotations

from pathlib import Path


class CheckpointError(Exception):
    """A checkpoint is missing, incomplete, corrupt or of an unknown format; str() names the path and why."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file's bytes do not match the checksum its manifest lists: damage, never a
    sign that the checkpoint does not fit what loads it (a sharded load tells the two apart)."""


class UntrustedCheckpointError(CheckpointError):
    """A sound checkpoint that holds arbitrary pickled objects, refused under weights_only loading."""


class CandidateRefused(Exception):
    """Ranks refused a checkpoint before a sharded load read anything of it: their own part of it
    is missing, damaged or unsafe to load. Raised on every rank from within DCP's exchange of
    load plans, so that telling the others costs no exchange of its own; `errors` are the
    refusing ranks' own errors, in rank order (each as it can be pickled to the other ranks)."""

    def __init__(self, errors: list[Exception]) -> None:
        super().__init__("; ".join(str(error) for error in errors))
        self.errors = errors

    def __reduce__(self) -> tuple[type[CandidateRefused], tuple[list[Exception]]]:
        return CandidateRefused, (self.errors,)


class CheckpointWriteError(OSError):
    """Storage refused a checkpoint: `errno` and `strerror` say why, `filename` which file failed.

    `checkpoint` is the checkpoint being written and ``__cause__`` the original error. str() says
    it all in one line, because what torch reports for the same failure ("unexpected pos") says
    none of it.
    """

    def __init__(self, code: int | None, strerror: str, filename: str | None = None,
                 checkpoint: Path | None = None) -> None:
        super().__init__(code, strerror, filename)
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        writing = f" (writing {self.filename})" if self.filename else ""
        return f"cannot write checkpoint {self.checkpoint}: {self.strerror}{writing}"
