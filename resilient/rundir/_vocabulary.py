"""`Vocabulary`: the base of the package's named values (states, events), which are on disk.

A member is a `str`, so JSON writes it as its value and it equals the plain string read back;
and it prints as its value too (`str()`, f-strings), which a plain `(str, Enum)` does not do the
same way on every Python version, so that messages and tables show what the files hold.
"""

from __future__ import annotations

from enum import Enum


class Vocabulary(str, Enum):
    """A `(str, Enum)` whose members read as their values wherever they are formatted."""

    def __str__(self) -> str:
        return str.__str__(self)
