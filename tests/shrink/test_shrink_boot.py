"""A shrunk system disk still boots (issue 16): the Debian system disk of sysdisk.py — GRUB for
BIOS in the MBR and the BIOS boot partition, GRUB for UEFI on the ESP, Debian's kernel and a
small initramfs on a large, nearly empty ext4 whose files all lie at its far end — is cloned
through the CLI onto a disk of 57 % of its size. That shrinks the ext4 (resize2fs in a
copy-on-write view) and moves every file; the copy then boots in QEMU (TCG) under SeaBIOS and
under OVMF as far as the root's own check, which verifies the kernel, the initramfs and a payload
through Linux's ext4 and prints the root's UUID and the payload's hash. The source is booted
first, so that a failure after the shrink is the shrink's; and it is unchanged by the clone."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clonebay import cli
from clonebay.engine.inspect import inspect_disk
from clonebay.system import loopdev
from clonebay.system.run import run
from clonebay.testdisks.files import sparse_file
from tests.diskcheck import sha256_range
from tests.shrink import sysdisk
from tests.shrink.checks import identities

PERCENT = 57  # of the source's size: the ext4 goes from 1.4 GiB to ~770 MiB
SECTOR = 512
MARKER = re.compile(sysdisk.MARKER + r" \S+ \S+")


@dataclass(frozen=True)
class Source:
    disk: sysdisk.SystemDisk
    sha256: str  # of the whole image, taken before anything read it


@dataclass(frozen=True)
class Shrunk:
    path: Path
    result: dict[str, Any]  # the clone's JSON result


def _assert_booted(boot: sysdisk.Boot, disk: sysdisk.SystemDisk, what: str) -> None:
    """The guest reached the root's check, which printed the right UUID and payload hash, and
    powered off."""
    print(f"{what}: {boot.firmware} boot to the check and power-off in {boot.seconds:.1f} s")
    assert MARKER.findall(boot.log) == [disk.marker], boot.describe()
    assert boot.returncode == 0, boot.describe()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """The system disk, built once, its sha256 taken, booted once under SeaBIOS."""
    if os.geteuid() != 0:
        pytest.skip("building the system disk needs root (loop devices, mount, grub-install)")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is missing (apt-get install qemu-system-x86 ovmf)")
    work = tmp_path_factory.mktemp("sysdisk")
    disk = sysdisk.build(work / "disk.img", work)
    digest = sha256_range(disk.path, 0, disk.size)
    _assert_booted(sysdisk.boot(disk.path, "bios", work / "boot-bios"), disk, "source")
    return Source(disk, digest)


@pytest.fixture(scope="module")
def shrunk(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Shrunk:
    """The source cloned through the CLI onto a sparse target of PERCENT % of its size."""
    size = source.disk.size * PERCENT // 100 // SECTOR * SECTOR
    target = sparse_file(tmp_path_factory.mktemp("sysdisk-target") / "target.img", size)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["clone", "--yes", "--json", str(source.disk.path), str(target)])
    assert code == 0, out.getvalue()[-3000:]
    return Shrunk(target, json.loads(out.getvalue().strip().splitlines()[-1]))


def test_clone_shrank_the_root_and_moved_its_files(source: Source, shrunk: Shrunk) -> None:
    said = json.dumps(shrunk.result)
    assert "p3: ext4 shrunk from" in said and "the source was not written" in said, said
    before = inspect_disk(str(source.disk.path))
    after = inspect_disk(str(shrunk.path))
    assert identities(after) == identities(before), "disk GUID, partition GUIDs or UUIDs changed"
    old = {pr.partition.number: pr for pr in before.partitions}
    new = {pr.partition.number: pr for pr in after.partitions}
    assert sorted(new) == [1, 2, 3]
    for number in (1, 2):  # BIOS boot partition and ESP: copied as they were, where they were
        assert new[number].partition.start == old[number].partition.start
        assert new[number].partition.size == old[number].partition.size
    root, old_root = new[sysdisk.ROOT_NUMBER], old[sysdisk.ROOT_NUMBER]
    assert root.volume is not None and old_root.volume is not None
    assert root.volume.fstype == "ext4" and root.volume.uuid == source.disk.root_uuid
    assert root.partition.size < old_root.partition.size, "the root partition did not shrink"
    assert root.volume.size < old_root.volume.size, "the ext4 did not shrink"
    assert root.volume.size <= root.partition.size
    assert source.disk.files_floor >= root.partition.size, (
        f"the files lay at {source.disk.files_floor} in the source's ext4, inside the shrunk"
        f" partition ({root.partition.size} bytes): the shrink did not have to move them"
    )
    assert "No problems found" in run(["sgdisk", "-v", str(shrunk.path)]).stdout.decode()
    dev = loopdev.attach(
        str(shrunk.path), offset=root.partition.start, size=root.partition.size, read_only=True
    )
    try:
        run(["e2fsck", "-fn", dev])
    finally:
        loopdev.detach(dev)
    assert sha256_range(source.disk.path, 0, source.disk.size) == source.sha256, "source written"


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_shrunk_disk_boots(source: Source, shrunk: Shrunk, firmware: str, tmp_path: Path) -> None:
    boot = sysdisk.boot(shrunk.path, firmware, tmp_path / f"boot-{firmware}")
    _assert_booted(boot, source.disk, "shrunk copy")
