"""The job file (job.yaml): its schema, loading with line numbers, and validation.

`load_job_file` turns a file plus `-o key=value` overrides into a `JobSpec` ready for submission
(a `SweepSpec` of one per task for a file with a `sweep`),
or raises a one-line `ConfigError` naming the key and the line (or override) at fault;
`json_schema` describes the file for editors. Names are imported when first used
(`resilient._lazy`): the CLI catches `ConfigError` in every command, and only `submit` and
`schema` need the rest, which imports torch.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._errors import ConfigError
    from ._load import JobSpec, SweepSpec, SweepTaskSpec, load_job_file
    from ._model import json_schema

__getattr__, __dir__ = lazy_exports(__name__, {
    "._errors": ("ConfigError",),
    "._load": ("JobSpec", "SweepSpec", "SweepTaskSpec", "load_job_file"),
    "._model": ("json_schema",),
})

__all__ = ["ConfigError", "JobSpec", "SweepSpec", "SweepTaskSpec", "json_schema", "load_job_file"]
