"""The run directory: everything one training run leaves behind, in one place.

Keeping all of it under one directory is what lets `resilient status RUN` tell a job's whole
story, and lets a second submission find the first and resume it. `_layout.py` names every file
in it; this package is the lowest layer, which everything else may read and write it through.
"""

from ._events import Event, History, append_event, event_time, read_events, read_history
from ._files import DamagedFile, shorten
from ._goodput import RUNNING, Goodput, Interruption, Lane, Part, Segment, goodput
from ._heartbeat import Beat, Heartbeat, read_heartbeat
from ._layout import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EMERGENCY_DIR,
    EVENTS_FILE,
    HEARTBEAT_FILE,
    LOCK_FILE,
    RECORD_FILE,
    RUN_ENTRIES,
    RUN_RECORDS,
    STATUS_FILE,
    STATUS_LOCK_FILE,
    SUBMITIT_DIR,
    SWEEP_ENTRIES,
    SWEEP_FILE,
    TRACKERS_FILE,
    checkpoints_dir,
    emergency_dir,
    is_emergency,
    is_run_dir,
    is_sweep_dir,
    submitit_folder,
)
from ._lock import RunDirError, RunDirInUse, RunLock, lock_holder
from ._modes import (
    DIR_MODE,
    FILE_MODE,
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    current_umask,
    make_dirs,
)
from ._record import Executor, JobRecord, read_record, write_record
from ._status import State, Status, read_status, update_status
from ._sweep import Sweep, SweepTask, read_sweep, write_sweep
from ._trackers import Tracker, tracker_id
from ._vocabulary import Vocabulary
from ._write import fsync_dir, write_atomically, write_json

__all__ = [
    "CHECKPOINTS_DIR", "CONFIG_FILE", "DIR_MODE", "EMERGENCY_DIR", "EVENTS_FILE", "FILE_MODE", "HEARTBEAT_FILE",
    "LOCK_FILE", "RUNNING", "Beat", "Goodput", "Heartbeat", "Interruption", "Lane", "Part", "Segment", "event_time",
    "goodput", "read_heartbeat",
    "PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "RECORD_FILE", "RUN_ENTRIES", "RUN_RECORDS", "STATUS_FILE",
    "STATUS_LOCK_FILE", "SUBMITIT_DIR", "SWEEP_ENTRIES", "SWEEP_FILE", "TRACKERS_FILE", "DamagedFile", "Event", "Executor", "History", "JobRecord", "RunDirError",
    "RunDirInUse", "RunLock", "State", "Status", "Sweep", "SweepTask", "Tracker", "Vocabulary", "append_event", "checkpoints_dir", "current_umask",
    "emergency_dir", "fsync_dir", "is_emergency", "is_run_dir", "is_sweep_dir", "lock_holder", "make_dirs", "read_events",
    "read_history", "read_record", "read_status", "read_sweep", "shorten", "submitit_folder", "tracker_id", "update_status", "write_atomically",
    "write_json", "write_record", "write_sweep",
]
