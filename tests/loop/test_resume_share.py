"""Which files each rank verifies at a resume (`_resume._share`): every file exactly once, by the
rank that reads it or, for files no rank reads, shared out; a rank takes the shards it wrote."""

from __future__ import annotations

import pytest

from resilient.checkpoint import SHARDS_METADATA, FileEntry, Manifest, shard_writer
from resilient.coordination import DistInfo
from resilient.loop._resume import _share
from resilient.loop._state import STATE_FILE, rank_file


def _manifest(saved_ranks: int, shards_per_rank: int) -> Manifest:
    names = [STATE_FILE, SHARDS_METADATA, *(rank_file(rank) for rank in range(saved_ranks)),
             *(f"__{rank}_{n}.distcp" for rank in range(saved_ranks) for n in range(shards_per_rank))]
    return Manifest(step=1, epoch=0, metrics={}, world_size=saved_ranks, kind="full", rule="r",
                    files={name: FileEntry(size=1, checksum="0" * 32) for name in names}, created=0.0,
                    package_version="0")


@pytest.mark.parametrize("defer_shards", [False, True], ids=["unsharded-load", "sharded-load"])
@pytest.mark.parametrize(("saved", "now"), [(1, 1), (2, 2), (4, 2), (2, 4), (3, 1)])
def test_every_file_is_verified_once_by_the_rank_reading_it_or_by_one_share(
        saved: int, now: int, defer_shards: bool) -> None:
    """A sharded load (`defer_shards`) verifies the shards a rank reads as it reads them, and has every
    rank check DCP's metadata as it reads it: neither is then in a share checked up front."""
    manifest = _manifest(saved, 2)
    shares = [_share(manifest, DistInfo(rank=rank, world_size=now, local_rank=rank, owns_group=False),
                     defer_shards=defer_shards) for rank in range(now)]
    loaded = [{STATE_FILE, rank_file(rank % saved)} | ({SHARDS_METADATA} if defer_shards else set())
              for rank in range(now)]
    checked = [name for share in shares for name in share[0] + share[1]]
    assert len(checked) == len(set(checked))  # nothing hashed twice
    assert set(checked) | set().union(*loaded) == set(manifest.files)  # nothing left out
    assert not set(checked) & set().union(*loaded)
    for rank, (now_checked, deferred) in enumerate(shares):
        own = {f"__{rank}_0.distcp", f"__{rank}_1.distcp"} & set(manifest.files)
        assert own <= set(deferred if defer_shards else now_checked)
        assert all(shard_writer(name) is not None for name in deferred) and (defer_shards or not deferred)


def test_shard_writer_reads_dcp_names_only() -> None:
    assert [shard_writer(name) for name in ("__0_0.distcp", "__12_3.distcp", ".metadata", "rank-00001.pt",
                                            "__x_0.distcp", "__1_0.distcp.tmp")] == [0, 12, None, None, None, None]
