"""The command line every integration's test script shares: where the run goes, where the final
weights go, and which signal to send, to which rank, after which step (what `_two_ranks` passes)."""

from __future__ import annotations

import argparse
from pathlib import Path


def job_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--signal-at-step", type=int)
    parser.add_argument("--signal", default="USR2")
    parser.add_argument("--signal-rank", type=int, default=0)
    return parser
