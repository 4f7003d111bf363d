from __future__ import annotations

import errno
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import xxhash

from resilient.checkpoint import (
    MANIFEST_NAME,
    FileEntry,
    find_checkpoints,
    link_checkpoint,
    newest_checkpoints,
    read_manifests,
)


def test_newest_first_by_step_then_creation_time(tmp_path, save, rewrite_manifest):
    save(tmp_path / "early.ckpt", step=5)
    save(tmp_path / "late.ckpt", step=5)
    save(tmp_path / "other" / "high.ckpt", step=10)
    rewrite_manifest(tmp_path / "early.ckpt", created=100.0)
    rewrite_manifest(tmp_path / "late.ckpt", created=200.0)
    rewrite_manifest(tmp_path / "other" / "high.ckpt", created=50.0)
    found = find_checkpoints([tmp_path, tmp_path / "other", tmp_path / "missing"])
    assert [path.name for path, _ in found] == ["high.ckpt", "late.ckpt", "early.ckpt"]
    assert [manifest.step for _, manifest in found] == [10, 5, 5]


def test_a_corrupt_checkpoint_is_skipped_with_a_warning_naming_it(tmp_path, save):
    save(tmp_path / "good.ckpt", step=1)
    save(tmp_path / "bad.ckpt", step=2)
    payload = tmp_path / "bad.ckpt" / "state.pt"
    payload.write_bytes(payload.read_bytes()[:100])
    with pytest.warns(UserWarning, match=re.escape(str(tmp_path / "bad.ckpt")) + ".*state.pt has 100 bytes"):
        found = find_checkpoints([tmp_path])
    assert [path.name for path, _ in found] == ["good.ckpt"]


def test_symlinks_are_resolved_and_reported_once(tmp_path, save):
    save(tmp_path / "runs" / "a.ckpt", step=3)
    link_checkpoint(tmp_path / "runs" / "last.ckpt", tmp_path / "runs" / "a.ckpt")
    found = find_checkpoints([tmp_path / "runs", tmp_path / "runs"])
    assert [(path, manifest.step) for path, manifest in found] == [((tmp_path / "runs" / "a.ckpt").resolve(), 3)]


def test_dot_entries_and_other_names_are_ignored_silently(tmp_path, save):
    save(tmp_path / "a.ckpt", step=1)
    save(tmp_path / "hidden.ckpt", step=9)
    os.rename(tmp_path / "hidden.ckpt", tmp_path / ".hidden.ckpt")
    (tmp_path / ".a.ckpt.tmp-0123abcd").mkdir()
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "job.yaml.ckpt-notes").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = find_checkpoints([tmp_path])
    assert [path.name for path, _ in found] == ["a.ckpt"]


def test_a_single_path_instead_of_a_list_is_refused(tmp_path):
    with pytest.raises(TypeError, match="dirs"):
        find_checkpoints(tmp_path)


class Maker:
    """Makes odd entries in one directory; some start from a real checkpoint, hence the fixtures."""

    def __init__(self, directory: Path, save: Callable[..., object], rewrite_manifest: Callable[..., None]) -> None:
        self.directory, self.save, self.rewrite_manifest = directory, save, rewrite_manifest

    def link(self, name: str, target: str) -> None:
        (self.directory / name).symlink_to(target)

    def with_manifest(self, name: str, make: Callable[[Path], None]) -> None:
        self.save(self.directory / name)
        (self.directory / name / MANIFEST_NAME).unlink()
        make(self.directory / name / MANIFEST_NAME)

    def moved_out(self, name: str, member: str) -> None:
        """`member` replaced by a link to the same bytes outside the checkpoint."""
        self.save(self.directory / name)
        outside = self.directory / f"{name}-{member}"
        (self.directory / name / member).rename(outside)
        (self.directory / name / member).symlink_to(outside)

    def forged(self, name: str, listed: str) -> None:
        self.save(self.directory / name)
        self.rewrite_manifest(self.directory / name, files={listed: FileEntry(0, xxhash.xxh3_128_hexdigest(b""))})


# name: (how to make it, what the warning must say about it)
ODD_ENTRIES: dict[str, tuple[Callable[[Maker], object], str]] = {
    "dangling.ckpt": (lambda m: m.link("dangling.ckpt", "nowhere.ckpt"), "is a dangling symbolic link to nowhere.ckpt"),
    "to-file.ckpt": (lambda m: m.link("to-file.ckpt", "notes.txt"),
                     "is a symbolic link to notes.txt, which is not a directory"),
    "loop.ckpt": (lambda m: m.link("loop.ckpt", "loop.ckpt"), "is a symbolic link loop"),
    "plain.ckpt": (lambda m: (m.directory / "plain.ckpt").write_bytes(b"lightning"),
                   "is not a directory but a regular file"),
    "fifo.ckpt": (lambda m: os.mkfifo(m.directory / "fifo.ckpt"), "is not a directory but a FIFO"),
    "manifest-link.ckpt": (lambda m: m.moved_out("manifest-link.ckpt", MANIFEST_NAME),
                           "MANIFEST.json is a symbolic link, not a regular file"),
    "manifest-dir.ckpt": (lambda m: m.with_manifest("manifest-dir.ckpt", Path.mkdir),
                          "MANIFEST.json is a directory, not a regular file"),
    "manifest-fifo.ckpt": (lambda m: m.with_manifest("manifest-fifo.ckpt", os.mkfifo),
                           "MANIFEST.json is a FIFO, not a regular file"),
    "forged.ckpt": (lambda m: m.forged("forged.ckpt", "/dev/zero"),
                    "MANIFEST.json lists '/dev/zero', which is an absolute path"),
    "payload-link.ckpt": (lambda m: m.moved_out("payload-link.ckpt", "state.pt"),
                          "payload file state.pt is a symbolic link, not a regular file"),
}


@pytest.mark.parametrize("name", ODD_ENTRIES)
def test_an_odd_entry_is_skipped_with_a_warning_naming_it_and_why(tmp_path, save, rewrite_manifest, name):
    save(tmp_path / "good.ckpt", step=1)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    make, reason = ODD_ENTRIES[name]
    make(Maker(tmp_path, save, rewrite_manifest))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = find_checkpoints([tmp_path])
    assert [path.name for path, _ in found] == ["good.ckpt"]
    [message] = [str(w.message) for w in caught]
    assert message.startswith(f"skipping checkpoint {tmp_path / name}: ") and reason in message, message


def test_an_unreadable_checkpoint_directory_is_skipped_with_a_warning(tmp_path, save, monkeypatch):
    save(tmp_path / "good.ckpt", step=1)
    save(tmp_path / "locked.ckpt", step=2)
    locked = tmp_path / "locked.ckpt"
    if os.geteuid() == 0:  # root reads whatever the mode says: fail the open as it fails for anyone else
        real_open = os.open

        def open_as_a_user(path, flags, *args, **kwargs):
            if os.fspath(path) == str(locked):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", open_as_a_user)
    locked.chmod(0)
    try:
        with pytest.warns(UserWarning, match=re.escape(f"skipping checkpoint {locked}: ") + ".*Permission denied"):
            found = find_checkpoints([tmp_path])
    finally:
        locked.chmod(0o755)
    assert [path.name for path, _ in found] == ["good.ckpt"]


def test_every_odd_entry_at_once_still_finds_the_good_checkpoints(tmp_path, save, rewrite_manifest):
    save(tmp_path / "good.ckpt", step=1)
    save(tmp_path / "better.ckpt", step=2)
    maker = Maker(tmp_path, save, rewrite_manifest)
    for make, _ in ODD_ENTRIES.values():
        make(maker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = find_checkpoints([tmp_path])
    assert [path.name for path, _ in found] == ["better.ckpt", "good.ckpt"]
    assert sorted(str(w.message).split(":")[0] for w in caught) == sorted(
        f"skipping checkpoint {tmp_path / name}" for name in ODD_ENTRIES
    )


def test_newest_checkpoints_authenticates_only_as_far_as_the_caller_reads(tmp_path, save, flip_byte):
    save(tmp_path / "old.ckpt", step=1)
    save(tmp_path / "new.ckpt", step=2)
    flip_byte(tmp_path / "old.ckpt" / MANIFEST_NAME, 40)  # damaged, but never reached
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path, manifest = next(newest_checkpoints([tmp_path]))
    assert (path.name, manifest.step) == ("new.ckpt", 2)
    with pytest.warns(UserWarning, match=re.escape(str(tmp_path / "old.ckpt"))):
        assert [path.name for path, _ in newest_checkpoints([tmp_path])] == ["new.ckpt"]


def test_a_manifest_claiming_a_higher_step_than_it_holds_is_skipped(tmp_path, save):
    """The step read cheaply only orders the candidates: the claim must still authenticate."""
    save(tmp_path / "good.ckpt", step=5)
    save(tmp_path / "forged.ckpt", step=7)
    manifest = tmp_path / "forged.ckpt" / MANIFEST_NAME
    manifest.write_bytes(manifest.read_bytes().replace(b'"step": 7,', b'"step": 9,', 1))
    with pytest.warns(UserWarning, match=re.escape(str(tmp_path / "forged.ckpt")) + ".*corrupt"):
        path, found = next(newest_checkpoints([tmp_path]))
    assert (path.name, found.step) == ("good.ckpt", 5)


def test_a_manifest_whose_first_line_is_damaged_is_authenticated_at_once(tmp_path, save):
    """No step to order it by: it is checked right away (and skipped, naming it), the others still found."""
    save(tmp_path / "a.ckpt", step=3)
    save(tmp_path / "b.ckpt", step=4)
    manifest = tmp_path / "a.ckpt" / MANIFEST_NAME
    manifest.write_bytes(b"[" + manifest.read_bytes()[1:])
    with pytest.warns(UserWarning, match=re.escape(str(tmp_path / "a.ckpt")) + ".*unreadable"):
        found = newest_checkpoints([tmp_path])
        assert [path.name for path, _ in found] == ["b.ckpt"]


def test_read_manifests_reads_whose_each_checkpoint_is_not_whether_it_loads(tmp_path, save, rewrite_manifest):
    """Payload files are not looked at (a truncated one is listed); what has no readable manifest is
    left out silently; a checkpoint behind a link is listed once, by its real path."""
    save(tmp_path / "a.ckpt", step=1)
    save(tmp_path / "truncated.ckpt", step=2)
    os.truncate(tmp_path / "truncated.ckpt" / "state.pt", 1)
    link_checkpoint(tmp_path / "last.ckpt", tmp_path / "truncated.ckpt")
    for make, _ in ODD_ENTRIES.values():
        make(Maker(tmp_path, save, rewrite_manifest))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = read_manifests([tmp_path, tmp_path])
    assert sorted(path.name for path, _ in found) == ["a.ckpt", "payload-link.ckpt", "truncated.ckpt"]
    assert {path.name: manifest.step for path, manifest in found}["truncated.ckpt"] == 2
    assert all(path == path.resolve() for path, _ in found)
    with pytest.raises(TypeError, match="dirs"):
        read_manifests(tmp_path)
