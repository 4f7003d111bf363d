"""What can go wrong with a checkpoint, as types callers can tell apart.

A checkpoint that is missing, damaged or forged is a `CheckpointError`: a reader skips it and
falls back to an older one.
"""

from __future__ import annotations


class CheckpointError(Exception):
    """A checkpoint is missing, incomplete, corrupt or of an unknown format; str() names the path and why."""


class UntrustedCheckpointError(CheckpointError):
    """A sound checkpoint that holds arbitrary pickled objects, refused under weights_only loading."""

