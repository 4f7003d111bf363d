"""`benchmarks/all.py`, the one command for every benchmark, runs on a tiny state (as CI runs it).

It must print one table and write the same rows as JSON: every benchmark's rows, each with its
anchor and a numeric ratio. No timing is asserted: the numbers of a tiny run mean nothing; the
README shows a full one. Resilient's async save rows may say n/a, until its `Run` takes `async_save`.
The timeout is generous: the two-rank rows start real processes (each imports torch and DCP,
seconds of CPU), and the machine running the suite may be busy with other work.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STALL = "training stall per save (10 ms {} steps, every 3), async_save="
DCP = "(torch.distributed.checkpoint)"
STOP_ANCHOR = "hand-written handler: torch.save + fsync + exit"
EXPECTED = [  # (what, anchor) of every row, in the table's order
    ("save", "torch.save + fsync"),
    ("save", "raw tensor bytes + fdatasync"),
    ("save", f"DCP save {DCP}"),
    ("resume, warm", "torch.load + load_state_dict"),
    ("resume, cold (pages evicted)", "torch.load + load_state_dict"),
    ("peak RSS of a resume over the state: resume (Run.track)", "torch.load + load_state_dict"),
    ("peak RSS of a resume over the state: load_checkpoint + load_state_dict", "torch.load + load_state_dict"),
    ("peak RSS of a resume over the state: load_checkpoint alone", "torch.load + load_state_dict"),
    ("latest valid among 1 checkpoints", "scandir + json of every manifest"),
    ("latest valid among 10 checkpoints", "scandir + json of every manifest"),
    ("save, flat 16 MiB tensors", "torch.save"),
    ("save, flat 16 MiB tensors", "torch.save + fsync"),
    ("checksum speed (xxh3_128)", "sha256 (hashlib)"),
    ("checksum speed (xxh3_128)", "crc32 (zlib)"),
    ("checksum speed (xxh3_128)", "write + fsync ({dir})"),
    *[row for kind in ("device", "cpu") for row in (
        (STALL.format(kind) + "True", "resilient, async_save=False"),
        (STALL.format(kind) + "True", f"DCP async_save {DCP}"),
        (STALL.format(kind) + "False", f"DCP save {DCP}"),
    )],
    ("resilient, a submitted task (fast exit)", STOP_ANCHOR),
    ("resilient, the user's own process (teardown)", STOP_ANCHOR),
    ("sharded save, 2 ranks (gloo, FSDP2 + AdamW)", "DCP save, FileSystemWriter(sync_files=True)"),
    ("sharded resume, 2 ranks (gloo, FSDP2 + AdamW), warm", "DCP load + set_state_dict"),
    ("sharded resume, 2 ranks (gloo, FSDP2 + AdamW), cold (pages evicted)", "DCP load + set_state_dict"),
    ("1 process, list, 2 step rules", "the same loop, plain"),
    ("1 process, DataLoader, 2 step rules", "the same loop, plain"),
    ("1 process, DataLoader, step + time rule", "the same loop, plain"),
    ("2 ranks (gloo), 10 ms step", "the same loop, plain"),
    ("resilient --help", "python -c pass"),
    ("resilient status", "python -c pass"),
    ("resilient logs", "python -c pass"),
]


def test_one_command_runs_every_benchmark_and_prints_one_table_and_writes_its_rows(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "RESILIENT_RUN_DIR"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "all.py"), "--sizes-mib", "2", "--quick",
                           "--dir", str(tmp_path), "--json", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    rows = result["rows"]
    expected = [(what, anchor.format(dir=tmp_path)) for what, anchor in EXPECTED]
    assert [(row["what"], row["anchor"]) for row in rows] == expected

    assert done.stdout.startswith("machine: cpus ")
    assert {"cpus", "model", "load average before", "after", "torch", "filesystem of --dir"} <= result["machine"].keys()
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert table[0] == "| what | size | resilient | anchor | ratio | target | met? |"
    assert len(table) == 1 + len(rows)  # the header, then one line per row
    for line, row in zip(table[1:], rows):
        assert line.startswith(f"| {row['what']} |") and f"| {row['anchor']}: " in line
        # a stall is a difference of two times: at this size, noise either way; anything else is positive
        assert math.isfinite(row["anchor_value"]) and (row["anchor_value"] > 0 or row["unit"] == "s/save")
        # finite, not necessarily positive: a stall is a difference of two times, noise at this size
        assert math.isfinite(row["ratio"]) and f"{row['ratio']:.3g}x" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.json"]  # the work directories are gone
