"""The guard against dm, md and LVM stacks, in the live system (the test machine's kernel has
neither dm nor md). One guest, booted once, builds each stack with the real tools and runs
`clonebay clone` onto and through it; every clone is refused (exit 6, with the guard's words)
and no disk changed: the guest syncs, then the host hashes the disks' image files before and
after (QEMU writes a guest's writes straight into them; hashing in the guest under TCG cost
seconds per disk and per refusal):

  - dm-linear over the source disk (a kpartx or dm-crypt mapping behaves the same): as the
    target of the source or of its partition, and as a source onto the disk under it;
  - dm-linear over the target, mounted: the target is mounted through the stacked device;
  - an md RAID1 (metadata 1.0, at the end) whose member is the target: held; and the array as
    the source onto its own member;
  - an LVM volume on a source partition: the LV as the target of that partition and of another
    partition of the disk, the disk under the LV as the target of the LV, and the LV mounted
    read-write: the source disk is refused as mounted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clonebay.errors import SafetyError
from tests.edgedisks import MIB, gpt_disk, mkext
from tests.iso.conftest import blank
from tests.iso.qemu import Disk, Guest

BOOT_TIMEOUT = 600  # TCG on 2 cores: ~2-3 min
REFUSED = SafetyError.exit_code
# no lazy init: the kernel would fill the inode tables in the background once mounted, and the
# disk under the mount would change between two hashes
MKFS = "mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0"


@pytest.fixture(scope="module")
def guest(live_iso: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    work = tmp_path_factory.mktemp("stacks")
    source = gpt_disk(work / "src.img", 128 * MIB, "1:2048:+40M", "2:0:+64M")
    mkext(source, MIB, 40 * MIB)
    vm = Guest(
        workdir=work,
        iso=live_iso,
        disks=[
            Disk(source, "virtio", "STK-SRC"),
            Disk(blank(work / "dst.img", 128 * MIB), "virtio", "STK-DST"),
            Disk(blank(work / "mirror.img", 128 * MIB), "virtio", "STK-MIRROR"),
        ],
    )
    vm.start()
    try:
        vm.wait_event("boot-ready", BOOT_TIMEOUT)
        vm.shell(BOOT_TIMEOUT)
        for name, serial in (("SRC", "STK-SRC"), ("DST", "STK-DST"), ("MIR", "STK-MIRROR")):
            vm.check(f"{name}=$(readlink -f /dev/disk/by-id/virtio-{serial}); echo ${name}")
        vm.check("mkdir -p /mnt/t")
        yield vm
    finally:
        vm.close()


def refused(vm: Guest, source: str, target: str, words: str) -> None:
    """`clonebay clone` exits 6 with the guard's words, and no disk changed."""
    before = vm.digests()
    argv = f"clonebay clone {source} {target} --no-verify --grow none --yes"
    code, out = vm.run(f"{argv} 2>&1", timeout=600)
    assert code == REFUSED, f"{argv}: exit {code}\n{out}"
    assert words in out and "nothing was written" in out and "Traceback" not in out, out
    assert vm.digests() == before, f"{argv} changed a disk"


def test_dm_linear_over_the_source_disk(guest: Guest) -> None:
    guest.check('dmsetup create cbsrc --table "0 $(blockdev --getsz $SRC) linear $SRC 0"')
    guest.check("udevadm settle")
    try:
        overlap = "overlap in the device graph"
        refused(guest, "$SRC", "/dev/mapper/cbsrc", overlap)
        refused(guest, "${SRC}1", "/dev/mapper/cbsrc", overlap)
        refused(guest, "/dev/mapper/cbsrc", "${SRC}2", overlap)
    finally:
        guest.check("dmsetup remove cbsrc")


def test_dm_over_the_target_mounted(guest: Guest) -> None:
    guest.check('dmsetup create cbdst --table "0 $(blockdev --getsz $DST) linear $DST 0"')
    guest.check(
        f"udevadm settle; {MKFS} /dev/mapper/cbdst && mount /dev/mapper/cbdst /mnt/t && sync"
    )
    try:
        refused(guest, "$SRC", "$DST", "is mounted (/mnt/t) through /dev/dm-")
    finally:
        guest.check("umount /mnt/t; dmsetup remove cbdst")


def test_md_raid1_whose_member_is_the_target(guest: Guest) -> None:
    guest.check(
        "yes | mdadm --create /dev/md0 --metadata=1.0 --level=1 --raid-devices=2 --run"
        " --assume-clean $DST $MIR && udevadm settle",
        timeout=300,
    )
    try:
        refused(guest, "$SRC", "$DST", "in use by /dev/md0")
        refused(guest, "/dev/md0", "$DST", "overlap in the device graph")
    finally:
        guest.check("mdadm --stop /dev/md0")


def test_lv_on_a_source_partition(guest: Guest) -> None:
    guest.check(
        "pvcreate -y ${SRC}2 && vgcreate -y cbvg ${SRC}2 && lvcreate -y -n cblv -L 32M cbvg"
        " && udevadm settle",
        timeout=300,
    )
    try:
        lv = "/dev/cbvg/cblv"
        refused(guest, "${SRC}2", lv, "overlap in the device graph")
        refused(guest, "${SRC}1", lv, "overlap in the device graph")
        refused(guest, lv, "${SRC}1", "overlap in the device graph")
        guest.check(f"{MKFS} {lv} && mount {lv} /mnt/t && sync", timeout=300)
        try:
            refused(guest, "$SRC", "$DST", "--allow-mounted-source")
        finally:
            guest.check("umount /mnt/t")
    finally:
        guest.check("vgchange -an cbvg", timeout=300)
