"""Safety audit #6: a source mounted read-write changes while it is read, so the copy is not
consistent. The guard refuses it (naming the mount point and --allow-mounted-source), on the
partition, its disk, through a loop device over the partition and, for an image file, through a
loop device over the file; a read-only mount is fine; the guard's allow flag turns the refusal
into a warning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clonebay.errors import SafetyError
from clonebay.system import guard
from clonebay.system.run import run
from tests.edgedisks import clonebay, sha256
from tests.safety.test_guard_stacked import Loops, loops, small_disk

__all__ = ["loops"]  # the fixture
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root")


def test_a_partition_mounted_read_write_is_refused(loops: Loops, tmp_path: Path) -> None:
    image = small_disk(tmp_path / "src.img")
    disk = loops.attach(image, partitions=True)
    mnt = tmp_path / "mnt"
    loops.mount(f"{disk}p1", mnt)
    for source in (f"{disk}p1", disk):
        with pytest.raises(SafetyError, match=f"read-write \\({mnt}.*--allow-mounted-source"):
            guard.check_source_free(source)
        warnings = guard.check_source_free(source, allow_mounted=True)
        assert len(warnings) == 1 and str(mnt) in warnings[0]
    assert guard.check_source_free(f"{disk}p2") == []  # the other partition is not read
    target = tmp_path / "copy.img"
    proc = clonebay("clone", disk, str(target), "--no-verify", "--grow", "none", "--yes")
    said = proc.stdout + proc.stderr
    assert proc.returncode == SafetyError.exit_code, said
    assert "--allow-mounted-source" in said and "Traceback" not in said
    assert not target.exists(), "the target was written"


def test_a_read_only_mount_is_fine(loops: Loops, tmp_path: Path) -> None:
    image = small_disk(tmp_path / "src.img")
    disk = loops.attach(image, partitions=True)
    loops.mount(f"{disk}p1", tmp_path / "mnt", "-o", "ro")
    before = sha256(image)
    assert guard.check_source_free(disk) == []
    assert guard.check_source_free(f"{disk}p1") == []
    target = tmp_path / "copy.img"
    proc = clonebay("clone", disk, str(target), "--no-verify", "--grow", "none", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sha256(image) == before


def test_mounted_through_a_loop_device_over_the_partition(loops: Loops, tmp_path: Path) -> None:
    image = small_disk(tmp_path / "src.img")
    disk = loops.attach(image, partitions=True)
    view = loops.attach(f"{disk}p1")
    loops.mount(view, tmp_path / "mnt")
    with pytest.raises(SafetyError, match=f"through {view}"):
        guard.check_source_free(disk)
    with pytest.raises(SafetyError, match=f"through {view}"):
        guard.check_source_free(f"{disk}p1")


def test_an_image_file_mounted_through_a_loop_device(loops: Loops, tmp_path: Path) -> None:
    image = small_disk(tmp_path / "src.img")
    disk = loops.attach(image, partitions=True)
    mnt = tmp_path / "mnt"
    loops.mount(f"{disk}p1", mnt)
    with pytest.raises(SafetyError, match=f"{mnt} through {disk}p1"):
        guard.check_source_free(str(image))
    run(["mount", "-o", "remount,ro", str(mnt)])
    assert guard.check_source_free(str(image)) == []
