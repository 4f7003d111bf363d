"""Random augmentation inside DataLoader workers resumes bit for bit.

The loop most vision and audio training runs: a dataset that draws from torch, numpy and
`random` in `__getitem__`, two or three workers (persistent or not), gradient clipping, an LR
schedule, one or two ranks. Stopped three times mid-epoch, in three epochs, alternately by SIGKILL
and by the warning signal, it must end with exactly the weights of a run that never stopped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ._jobs import assert_bitwise_equal, launch, run_to_end

EXIT_STOPPED = 75
# (how, step): "kill" SIGKILLs rank 0 during step+1; "signal" sends the warning signal then.
STOPS = {
    1: [("kill", 5), ("signal", 14), ("kill", 27)],  # 12 steps an epoch
    2: [("kill", 3), ("signal", 8), ("kill", 15)],  # 6 steps an epoch
}


def _stopped_by_signal(run_dir: Path, out: Path, world_size: int, step: int, extra: tuple[str, ...]) -> None:
    rank = world_size - 1  # with two ranks, only the one that is not rank 0 is told
    procs = launch(run_dir, out, world_size, None,
                   (*extra, "--signal-at-step", str(step), "--signal", "USR2", "--signal-rank", str(rank)))
    for proc in procs:
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == EXIT_STOPPED, stderr


# Every value of each axis once (each run is five starts of the job): one and two ranks, two and
# three workers, persistent or not. A one-rank run with two persistent workers resumes bitwise in
# test_persistent_workers_resume_bitwise_from_an_epoch_end_checkpoint below.
@pytest.mark.parametrize(
    "world_size, workers, persistent",
    [(1, 3, False), (2, 2, True)],
)
def test_augmenting_workers_resume_bitwise_after_three_stops(
    tmp_path: Path, world_size: int, workers: int, persistent: bool
) -> None:
    extra = ("--augment", "--workers", str(workers), *(("--persistent-workers",) if persistent else ()))
    reference = tmp_path / "reference.pt"
    run_to_end(tmp_path / "reference-run", reference, world_size, extra=extra)

    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    for how, step in STOPS[world_size]:
        if how == "kill":
            run_to_end(run_dir, out, world_size, kill_at=step, extra=extra)
        else:
            _stopped_by_signal(run_dir, out, world_size, step, extra)
        assert not out.exists()
    report = run_to_end(run_dir, out, world_size, extra=extra)

    assert '"resumed_from": null' not in report
    assert_bitwise_equal(reference, out)


def test_augmentation_does_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    """Per-sample seeds make each sample's draws a function of (seed, epoch, index) alone."""
    two, three = tmp_path / "two.pt", tmp_path / "three.pt"
    run_to_end(tmp_path / "two", two, 1, extra=("--augment", "--workers", "2", "--epochs", "1"))
    run_to_end(tmp_path / "three", three, 1, extra=("--augment", "--workers", "3", "--epochs", "1"))
    assert_bitwise_equal(two, three)


def test_persistent_workers_resume_bitwise_from_an_epoch_end_checkpoint(tmp_path: Path) -> None:
    """A DataLoader with persistent workers draws its workers' seed from the main generator only
    for the first epoch; a run resumed at a later epoch's start must not draw it again."""
    extra = ("--augment", "--workers", "2", "--persistent-workers", "--sync")
    reference = tmp_path / "reference.pt"
    run_to_end(tmp_path / "reference-run", reference, 1, extra=extra)
    run_dir, out = tmp_path / "run", tmp_path / "out.pt"
    run_to_end(run_dir, out, 1, kill_at=25, extra=extra)  # 12 steps an epoch: the newest is epoch 1's end
    report = run_to_end(run_dir, out, 1, extra=extra)
    assert '"resumed_from": "' + str(run_dir / "checkpoints" / "last.ckpt") in report
    assert_bitwise_equal(reference, out)
