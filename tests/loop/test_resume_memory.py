"""A resume gives back the pages of the weights it copied, and never loses a value doing so.

Memory is read from ``/proc/self/smaps`` (the resident pages of the payload file's mapping in
this process), not timed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import resilient
from resilient.checkpoint import MappedPayloads, load_files

pytestmark = pytest.mark.filterwarnings("ignore:.*has no bookkeeping")  # the resuming rule is not the saving one
_LAYERS, _WIDTH = 4, 512  # 1 MiB per weight: far more than the pages a release may keep


def _mapped_resident(path: Path) -> int:
    """Bytes of this process's mappings of `path` that are resident."""
    inode, resident, current = os.stat(path).st_ino, 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if len(fields) >= 5 and "-" in fields[0] and ":" in fields[3]:  # a mapping's header line
                current = int(fields[4]) == inode
            elif current and fields[0] == "Rss:":
                resident += int(fields[1]) * 1024
    return resident


def _model(tied: bool = False) -> torch.nn.Module:
    model = torch.nn.Sequential(*[torch.nn.Linear(_WIDTH, _WIDTH) for _ in range(_LAYERS)])
    if tied:
        model[3].weight = model[0].weight
    return model


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = _model(tied=True)
    with resilient.Run(checkpoint=[], run_dir=tmp_path / "run", resume=False) as run:
        run.track(model=model)
        run.save_checkpoint(tmp_path / "saved.ckpt")
    return tmp_path / "saved.ckpt", model


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_a_resume_keeps_no_page_of_the_weights_it_copied(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    weights = sum(p.nbytes for p in model.parameters())
    for release in (False, True):  # without the release, the same load keeps every page it read
        with resilient.Run(checkpoint=resilient.ModelCheckpoint(dirpath=path.parent, every_n_train_steps=10**6),
                           run_dir=path.parent / f"resume-{release}") as run:
            fresh = _model(tied=True)
            if release:
                run.track(model=fresh)
            else:
                state = load_files(path, ["state.pt"])["state.pt"]
                fresh.load_state_dict(state["objects"]["model"])
            assert _equal(fresh, model)
            resident = _mapped_resident(path / "state.pt")
            if release:
                assert resident < weights / 16, f"{resident} bytes of the mapped weights stayed resident"
            else:
                assert resident >= weights / 2
                del state


def test_a_release_touches_only_pages_of_the_recorded_files(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    pages = MappedPayloads()
    loaded = load_files(path, ["state.pt"], pages=pages)["state.pt"]["objects"]["model"]
    anonymous = torch.arange(4 * 2**20, dtype=torch.uint8)  # ordinary memory: MADV_DONTNEED would zero it
    expected = anonymous.clone()
    pages.release([anonymous, *loaded.values()])
    assert torch.equal(anonymous, expected)
    unrecorded = load_files(path, ["state.pt"])["state.pt"]["objects"]["model"]
    values = [t.clone() for t in unrecorded.values()]
    MappedPayloads().release(unrecorded.values())  # no file recorded: nothing to give back
    assert _mapped_resident(path / "state.pt") > 0
    assert all(torch.equal(a, b) for a, b in zip(unrecorded.values(), values))


def test_a_released_tensor_reads_the_same_again(saved: tuple[Path, torch.nn.Module]) -> None:
    """A release drops clean pages of a private file mapping: the next read maps the file's bytes again."""
    path, model = saved
    pages = MappedPayloads()
    loaded = load_files(path, ["state.pt"], pages=pages)["state.pt"]["objects"]["model"]
    before = {name: tensor.clone() for name, tensor in loaded.items()}
    pages.release(loaded.values())
    assert _mapped_resident(path / "state.pt") < sum(t.nbytes for t in before.values()) / 16
    assert all(torch.equal(loaded[name], before[name]) for name in before)
    assert torch.equal(loaded["0.weight"], model[0].weight)


class _KeepsAndDoubles(torch.nn.Module):
    """A module that makes the saved tensor its parameter and changes it in place as it loads."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(_WIDTH, _WIDTH))

    def _load_from_state_dict(self, state_dict, prefix, *args):  # noqa: ANN001, ANN002, ANN202
        saved = state_dict[prefix + "weight"]
        saved.mul_(2)  # written: these pages are now this process's own, not the file's
        self.weight = torch.nn.Parameter(saved)


def test_a_module_that_keeps_a_saved_tensor_keeps_its_pages(tmp_path: Path) -> None:
    """Releasing a kept tensor's written pages would silently undo the write: it is never released."""
    torch.manual_seed(0)
    saved = _KeepsAndDoubles()
    torch.nn.init.normal_(saved.weight)
    with resilient.Run(checkpoint=[], run_dir=tmp_path / "run", resume=False) as run:
        run.track(model=saved)
        run.save_checkpoint(tmp_path / "saved.ckpt")
    with resilient.Run(checkpoint=resilient.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=10**6),
                       run_dir=tmp_path / "resume") as run:
        fresh = _KeepsAndDoubles()
        run.track(model=fresh)
        assert torch.equal(fresh.weight, saved.weight * 2)
