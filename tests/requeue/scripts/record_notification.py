"""A notification command for the tests: appends one JSON line to argv[1] with the RESILIENT_*
variables it was given and what the run directory said when it ran (status.json's state, the last
event), so a test can tell that the notification came after the state and the event were recorded.

With `--hang` it also starts a child in its own process group, records both pids, and then waits
forever: a notifier that outlives its timeout, whose whole group must be killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

out, hang = Path(sys.argv[1]), "--hang" in sys.argv[2:]
run_dir = Path(os.environ["RESILIENT_RUN_DIR"])
record = {key: value for key, value in os.environ.items() if key.startswith("RESILIENT_")}
record["status_state"] = json.loads((run_dir / "status.json").read_text())["state"]
record["last_event"] = json.loads((run_dir / "events.jsonl").read_text().splitlines()[-1])["event"]
if hang:
    child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    record["pids"] = [os.getpid(), child.pid]
with open(out, "a") as file:
    file.write(json.dumps(record) + "\n")
if hang:
    signal.pause()
