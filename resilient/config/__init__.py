"""The job file (job.yaml): its schema, loading with line numbers, and validation.

`load_job_file` turns a file plus `-o key=value` overrides into a `JobSpec` ready for submission,
or raises a one-line `ConfigError` naming the key and the line (or override) at fault;
`json_schema` describes the file for editors.
"""

from ._errors import ConfigError
from ._load import JobSpec, load_job_file
from ._model import json_schema

__all__ = ["ConfigError", "JobSpec", "json_schema", "load_job_file"]
