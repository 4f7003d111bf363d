"""A rule's identity in checkpoints: a JSON object now, a Python repr in older checkpoints.

New manifests store the identity as a mapping that tools read as it is. A checkpoint written
before (format 1: the repr in the manifest and as the key of the rule's bookkeeping in state.pt)
must still load, be listed by the CLI without parsing the repr, and resume with each rule's
bookkeeping matched, orphans included.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from resilient import ModelCheckpoint, Run
from resilient.checkpoint import (
    MANIFEST_NAME,
    FileEntry,
    read_manifest,
    write_checkpoint,
)
from resilient.checkpoint._hashing import checksum_bytes
from resilient.checkpoint._manifest import encode_manifest
from resilient.cli import _checkpoints
from resilient.rules._identity import legacy_key


def _as_written_before(path: Path, *, step: int | None = None) -> None:
    """Rewrite a checkpoint as resilient wrote it before identities were JSON (format 1)."""
    manifest = read_manifest(path)
    state = torch.load(path / "state.pt", weights_only=True)
    state["rules"] = {legacy_key(json.loads(key)): value for key, value in state["rules"].items()}
    (path / "state.pt").unlink()  # hard-linked with the other targets of its save: write a new file
    torch.save(state, path / "state.pt")
    data = (path / "state.pt").read_bytes()
    rule = manifest.rule if isinstance(manifest.rule, str) else legacy_key(manifest.rule)
    old = dataclasses.replace(manifest, format_version=1, rule=rule, step=manifest.step if step is None else step,
                              files={**manifest.files, "state.pt": FileEntry(len(data), checksum_bytes(data))})
    (path / MANIFEST_NAME).unlink()
    (path / MANIFEST_NAME).write_bytes(encode_manifest(old))


def _rules() -> list[ModelCheckpoint]:
    return [ModelCheckpoint(every_n_train_steps=2, filename="{step}")]


def _train(run_dir: Path, *, stop_at: int | None = None) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [torch.full((2, 3), float(i)) for i in range(8)]
    with Run(checkpoint=_rules(), run_dir=run_dir) as run:
        run.track(model=model, optimizer=opt)
        for _ in run.epochs(1):
            for x in run.batches(data):
                opt.zero_grad()
                model(x).pow(2).mean().backward()
                opt.step()
                if run.step == stop_at:
                    return model
    return model


def test_a_new_manifest_stores_the_identity_as_an_object(tmp_path):
    rule = ModelCheckpoint(monitor="val", every_n_train_steps=5, train_time_interval="90s")
    [manifest] = write_checkpoint([(tmp_path / "a.ckpt", rule.identity)], {"state.pt": torch.ones(1)}, step=5,
                                  epoch=0, metrics={}, world_size=1)
    stored = json.loads((tmp_path / "a.ckpt" / MANIFEST_NAME).read_text())["manifest"]["rule"]
    assert stored == rule.identity == manifest.rule == read_manifest(tmp_path / "a.ckpt").rule
    assert _checkpoints._rule_label(stored) == "every 5 steps, every 0:01:30, by val (min)"


def test_the_cli_shows_rules_without_parsing_them():
    old = legacy_key(ModelCheckpoint(every_n_train_steps=5).identity)
    assert _checkpoints._rule_label(old) == old  # an older checkpoint's rule, as it was stored
    assert _checkpoints._rule_label("emergency") == "emergency"
    assert _checkpoints._rule_label(ModelCheckpoint(save_top_k=0, every_n_epochs=0,
                                                    train_time_interval="1h").identity) == "every 1:00:00"
    source = inspect.getsource(_checkpoints)
    assert "literal_eval" not in source and "import re" not in source


def test_an_old_checkpoint_loads_and_resumes_with_its_rule_bookkeeping(tmp_path):
    uninterrupted = _train(tmp_path / "whole")
    run_dir = tmp_path / "run"
    _train(run_dir, stop_at=5)  # leaves step=4.ckpt: the rule keeps the latest
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("*.ckpt")) == ["step=4.ckpt"]
    shutil.copytree(checkpoints / "step=4.ckpt", checkpoints / "step=2.ckpt")
    _as_written_before(checkpoints / "step=2.ckpt", step=2)  # evicted, but not deleted when the job died
    _as_written_before(checkpoints / "step=4.ckpt")
    assert read_manifest(checkpoints / "step=4.ckpt").rule == legacy_key(_rules()[0].identity)
    assert (run_dir / "checkpoints" / "step=4.ckpt" / "state.pt").stat().st_nlink == 1
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*has no bookkeeping")  # the old key was not matched
        resumed = _train(run_dir)
    assert not (checkpoints / "step=2.ckpt").exists()  # the orphan was recognised as the rule's
    assert sorted(p.name for p in checkpoints.glob("*.ckpt")) == ["step=4.ckpt", "step=8.ckpt"]  # resumed from: kept
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), uninterrupted.state_dict().values()))
    assert read_manifest(checkpoints / "step=8.ckpt").rule == _rules()[0].identity
