"""When storage refuses a checkpoint: the error names the cause and the path, and nothing half-written stays.

Real refusals, not mocks: a file size limit (``ulimit -f``) in a child process, and, as root, a
2 MiB tmpfs that fills up. Also the modes of what the writer creates, under any umask.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import resilient.checkpoint
from resilient.checkpoint import (
    CheckpointWriteError,
    link_checkpoint,
    verify,
    write_checkpoint,
)

REPO = Path(resilient.checkpoint.__file__).resolve().parents[2]


def _write(targets: list[tuple[Path, str]], payload: object, step: int = 2) -> None:
    write_checkpoint(targets, {"state.pt": payload}, step=step, epoch=0, metrics={}, world_size=1)


def test_a_file_size_limit_names_the_cause_and_leaves_older_checkpoints_alone(tmp_path, save):
    save(tmp_path / "last.ckpt", step=1)
    child = textwrap.dedent(
        f"""
        import json, resource, torch
        from pathlib import Path
        from resilient.checkpoint import CheckpointWriteError, write_checkpoint

        directory = Path({str(tmp_path)!r})
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            write_checkpoint([(directory / "new.ckpt", "r"), (directory / "last.ckpt", "last")],
                             {{"state.pt": torch.zeros(100_000)}}, step=2, epoch=0, metrics={{}}, world_size=1)
        except CheckpointWriteError as error:
            print(json.dumps({{"errno": error.errno, "message": str(error), "oserror": isinstance(error, OSError),
                              "filename": error.filename, "cause": type(error.__cause__).__name__}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, (result.returncode, result.stderr)  # -25 would be death by SIGXFSZ
    report = json.loads(result.stdout)
    assert report["errno"] == errno.EFBIG and report["oserror"] and report["cause"] == "OSError"
    assert report["message"].startswith(f"cannot write checkpoint {tmp_path / 'new.ckpt'}: File too large"), report
    assert report["filename"].startswith(str(tmp_path / ".new.ckpt.tmp-")) and report["filename"].endswith("state.pt")
    assert "unexpected pos" not in report["message"]
    assert os.listdir(tmp_path) == ["last.ckpt"]
    assert verify(tmp_path / "last.ckpt", full=True).step == 1


def test_a_full_file_system_names_the_cause_and_gives_the_space_back(small_filesystem, save):
    small = small_filesystem
    save(small / "last.ckpt", step=1)
    with pytest.raises(CheckpointWriteError) as caught:
        _write([(small / "big.ckpt", "r"), (small / "last.ckpt", "last")], torch.zeros(1_000_000))  # 4 MB
    error = caught.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert str(error).startswith(f"cannot write checkpoint {small / 'big.ckpt'}: No space left on device (writing ")
    assert isinstance(error.__cause__, OSError) and error.__cause__.errno == errno.ENOSPC
    assert os.listdir(small) == ["last.ckpt"]
    assert verify(small / "last.ckpt", full=True).step == 1
    save(small / "next.ckpt", step=3)  # would fail too if the temporary still held the space
    assert verify(small / "next.ckpt", full=True).step == 3


class RaisesOSError:
    def __reduce__(self):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "vocab.txt")


def test_an_oserror_from_the_objects_saved_is_not_reported_as_a_storage_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt") as caught:
        _write([(tmp_path / "a.ckpt", "r")], {"tokenizer": RaisesOSError()})
    assert not isinstance(caught.value, CheckpointWriteError)
    assert os.listdir(tmp_path) == []


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask that a test changes."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


@pytest.mark.parametrize("copies", [False, True], ids=["hard-links", "copies"])
@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o000, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_what_the_writer_creates_is_never_writable_by_others(tmp_path, umask, request, copies, mask, file_mode,
                                                             dir_mode):
    if copies:
        request.getfixturevalue("no_hard_links")
    root = tmp_path / "runs"
    os.umask(mask)
    _write([(root / "ckpts" / "a.ckpt", "top_k"), (root / "ckpts" / "b.ckpt", "every")], torch.ones(3))
    _write([(root / "ckpts" / "a.ckpt", "top_k")], torch.ones(3), step=3)  # a replacement
    link_checkpoint(root / "links" / "last.ckpt", root / "ckpts" / "a.ckpt")
    created = [root] + [Path(top) / name for top, dirs, files in os.walk(root) for name in dirs + files]
    assert len(created) == 10, created  # runs, ckpts, links, 2 checkpoints of 2 files each, the link
    modes = {path: stat.S_IMODE(os.lstat(path).st_mode) for path in created if not path.is_symlink()}
    assert modes == {path: dir_mode if path.is_dir() else file_mode for path in modes}
