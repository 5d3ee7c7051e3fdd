"""Direct and buffered I/O give byte-identical targets, end to end through the CLI: a clone of
the standard GPT test disk (ext4, NTFS, FAT, raw areas) onto new image files and onto loop
devices pre-filled with the same random bytes, and a restore of its image the same way. The
buffered run is the one a kernel that refuses O_DIRECT gets (CLONEBAY_IO=buffered)."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from clonebay.testdisks.disks import BuiltDisk
from tests.edgedisks import CLONEBAY, loop, sha256

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")


def _run(io: str, *args: str) -> None:
    env = {**os.environ, "LC_ALL": "C", "CLONEBAY_IO": io}
    yes = ["--yes"] if args[0] in ("clone", "restore") else []
    done = subprocess.run(
        [str(CLONEBAY), *args, *yes], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _garbage(path: Path, size: int) -> None:
    """A target that held something else: the same random bytes for both runs."""
    rng = random.Random(11)
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(rng.randbytes(1 << 20))


def test_clone_direct_equals_buffered(gpt_disk: BuiltDisk, tmp_path: Path) -> None:
    source_hash = sha256(gpt_disk.path)
    hashes = {}
    for io in ("direct", "buffered"):
        target = tmp_path / f"new-{io}.img"
        _run(io, "clone", str(gpt_disk.path), str(target))
        hashes[io] = sha256(target)
    assert hashes["direct"] == hashes["buffered"] == source_hash
    for io in ("direct", "buffered"):
        backing = tmp_path / f"old-{io}.img"
        _garbage(backing, gpt_disk.size)
        with loop(backing) as dev:
            _run(io, "clone", str(gpt_disk.path), dev)
        hashes[io] = sha256(backing)
    assert hashes["direct"] == hashes["buffered"]
    assert sha256(gpt_disk.path) == source_hash


def test_restore_direct_equals_buffered(gpt_disk: BuiltDisk, tmp_path: Path) -> None:
    image = tmp_path / "image"
    _run("direct", "save", str(gpt_disk.path), str(image))
    hashes = {}
    for io in ("direct", "buffered"):
        backing = tmp_path / f"old-{io}.img"
        _garbage(backing, gpt_disk.size)
        with loop(backing, sector_size=512) as dev:
            _run(io, "restore", str(image), dev)
        hashes[io] = sha256(backing)
    assert hashes["direct"] == hashes["buffered"]
    new = tmp_path / "new.img"
    _run("direct", "restore", str(image), str(new))
    assert sha256(new) == sha256(gpt_disk.path)
