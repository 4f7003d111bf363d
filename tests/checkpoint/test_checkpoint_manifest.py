from __future__ import annotations

import json
import math

import pytest

from resilient.checkpoint import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    CheckpointError,
    read_manifest,
)


def test_manifest_round_trips_non_finite_metrics_as_strict_json(tmp_path, save):
    metrics = {"val_loss": float("nan"), "up": float("inf"), "down": float("-inf"), "acc": 0.25}
    written = save(tmp_path / "a.ckpt", metrics=metrics)
    read = read_manifest(tmp_path / "a.ckpt")
    assert math.isnan(read.metrics["val_loss"])
    finite = {key: value for key, value in read.metrics.items() if key != "val_loss"}
    assert finite == {"up": math.inf, "down": -math.inf, "acc": 0.25}
    assert read.files == written.files and read.created == written.created
    text = (tmp_path / "a.ckpt" / MANIFEST_NAME).read_text()

    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    json.loads(text, parse_constant=refuse)


def test_every_flipped_byte_in_the_manifest_is_detected(tmp_path, save, flip_byte, rewrite_manifest):
    save(tmp_path / "a.ckpt", metrics={"loss": 1e-05})
    # 1795898501.3635384 parses to the same double: only a byte-exact check catches that flip
    rewrite_manifest(tmp_path / "a.ckpt", created=1795898501.3635385)
    manifest = tmp_path / "a.ckpt" / MANIFEST_NAME
    pristine = manifest.read_bytes()
    for offset in range(len(pristine)):
        flip_byte(manifest, offset)
        with pytest.raises(CheckpointError, match=r"a\.ckpt"):
            read_manifest(tmp_path / "a.ckpt")
        manifest.write_bytes(pristine)
    read_manifest(tmp_path / "a.ckpt")


def test_newer_format_is_refused_with_upgrade_advice(tmp_path, save, rewrite_manifest):
    save(tmp_path / "a.ckpt")
    rewrite_manifest(tmp_path / "a.ckpt", format_version=FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}.*upgrade"):
        read_manifest(tmp_path / "a.ckpt")


def test_unknown_checksum_algorithm_is_refused(tmp_path, save, rewrite_manifest):
    save(tmp_path / "a.ckpt")
    rewrite_manifest(tmp_path / "a.ckpt", checksum_algorithm="md5")
    with pytest.raises(CheckpointError, match="unknown checksum algorithm 'md5'"):
        read_manifest(tmp_path / "a.ckpt")


def test_wrong_field_type_is_reported_as_malformed(tmp_path, save, rewrite_manifest):
    save(tmp_path / "a.ckpt")
    rewrite_manifest(tmp_path / "a.ckpt", step="7")
    with pytest.raises(CheckpointError, match=r"malformed.*'step'"):
        read_manifest(tmp_path / "a.ckpt")


def test_missing_manifest_and_non_directories_are_named(tmp_path):
    (tmp_path / "partial.ckpt").mkdir()
    (tmp_path / "file.ckpt").write_bytes(b"lightning")
    with pytest.raises(CheckpointError, match=r"partial\.ckpt has no MANIFEST\.json"):
        read_manifest(tmp_path / "partial.ckpt")
    with pytest.raises(CheckpointError, match=r"file\.ckpt is not a directory"):
        read_manifest(tmp_path / "file.ckpt")
    with pytest.raises(CheckpointError, match=r"gone\.ckpt does not exist"):
        read_manifest(tmp_path / "gone.ckpt")
