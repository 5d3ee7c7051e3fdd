"""LUKS2 and LVM2 volumes cloned by their used blocks inside the live system (issue 19).

The test machine's kernel has no device-mapper; the live system's has. One guest (direct kernel
boot, two virtio disks of 512 MiB) builds the source with the real tools: GPT, p1 a LUKS2 volume
(PBKDF2 key slot opened by a key file written in the guest) holding an ext4, p2 an LVM PV whose
VG has an ext4 LV and an XFS LV and free extents. Every file is random data whose sha256 the
guest records; the oracles for what a copy must carry come from the tools themselves (the LUKS2
data offset from luksDump's JSON, allocated blocks from dumpe2fs, pe_start, LV sizes and free
extents from pvs/lvs/vgs). Then, in order:

  - `clonebay probe --key-file` maps p1 (luks) and p2 (lvm2-pv) natively, each within the
    bounds those oracles give;
  - `clonebay clone --key-file` copies at most those bytes, far fewer than the disk holds;
  - a wrong key file is refused with exit 5 and both disks are unchanged (sha256 of their image
    files before and after, once the guest has synced);
  - the target's p1 opens with cryptsetup and the same key file, its ext4 passes e2fsck -fn and
    holds every file as recorded; the target's VG (seen alone through lvm's --devices, as the
    source's PV has the same UUIDs) has the source's VG and LV UUIDs, activates onto the target's
    p2 (dmsetup deps), and its ext4 and XFS pass e2fsck -fn and xfs_repair -n with every file
    as recorded.

Measured under TCG on 2 busy cores: the boot ~2.5-3 min, the source ~45 s, probe 6 s, clone 11 s
(127 MiB of 512), the module ~6 min. The XFS LV needs xfsprogs in the ISO (package list).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from clonebay.errors import InputError
from tests.iso.conftest import BOOT_TIMES, blank, record_boot
from tests.iso.qemu import Disk, Guest, direct_kernel

MIB = 1 << 20
DISK = 512 * MIB
BOOT_TIMEOUT = 600  # TCG on 2 cores: ~2 min
KEY, WRONG = "/root/luks.key", "/root/wrong.key"
REFUSED = InputError.exit_code  # 5: none of the keys given opens the volume
# mkfs.xfs (xfsprogs >= 5.19) refuses filesystems under 300 MB unless fstests' three variables
# are set; a 64 MiB XFS LV keeps the disk at 512 MiB (XFS is copied whole: no native parser)
SMALL_XFS = "TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -f"
# Fills a folder with random files, records their sha256 in /root/NAME.sha256 and prints their
# total size: fill DIR COUNT NAME
FILL = (
    "fill() { mkdir -p $1/docs/deep && for i in $(seq 1 $2); do"
    " head -c $((i * 40009)) /dev/urandom > $1/docs/f$i.bin || return 1; done"
    " && head -c 6M /dev/urandom > $1/docs/deep/big.bin && echo $3 > $1/name.txt"
    " && (cd $1 && find . -type f -print0 | sort -z | xargs -0 sha256sum) > /root/$3.sha256"
    " && find $1 -type f -printf '%s\\n' | awk '{s += $1} END {print s}'; }"
)


@dataclass
class Source:
    """What the guest built and what the tools say about it (bytes unless named otherwise)."""

    files: dict[str, int] = field(default_factory=dict)  # luks, home, xfs: file bytes written
    luks_offset: int = 0  # where LUKS2's data segment starts (header and key slots before it)
    luks_uuid: str = ""
    ext_used: dict[str, int] = field(default_factory=dict)  # luks, home: allocated ext4 bytes
    ext_free: dict[str, int] = field(default_factory=dict)
    pe_start: int = 0
    xfs_size: int = 0
    vg_free: int = 0
    vg_uuid: str = ""
    lv_uuids: dict[str, str] = field(default_factory=dict)
    timings: list[str] = field(default_factory=list)


@dataclass
class Locked:
    vm: Guest
    source: Source
    results: dict[str, Any] = field(default_factory=dict)  # filled by the tests, in order


def _ext(vm: Guest, dev: str) -> tuple[int, int]:
    """Allocated and free bytes of the (unmounted) ext4 on ``dev``, as dumpe2fs -h says."""
    head = vm.check(f"dumpe2fs -h {dev} 2>/dev/null")
    value = dict(re.findall(r"^(Block count|Free blocks|Block size):\s+(\d+)$", head, re.M))
    size, free = int(value["Block size"]), int(value["Free blocks"])
    return (int(value["Block count"]) - free) * size, free * size


def _lvm(vm: Guest, command: str) -> str:
    """What an lvm reporting command prints on stdout (its warnings kept in /tmp/lvm.err)."""
    return vm.check(f"{command} --noheadings 2>/tmp/lvm.err").strip()


def _lvm_bytes(vm: Guest, command: str) -> int:
    return int(_lvm(vm, f"{command} --nosuffix --units b"))


def build_source(vm: Guest) -> Source:
    """The source disk, built in the guest; the facts the tools give about it."""
    src = Source()
    vm.check(FILL)
    vm.check("mkdir -p /mnt/a /mnt/b /mnt/c")
    vm.check("sgdisk -n 1:2048:+192M -t 1:8309 -n 2:0:0 -t 2:8e00 $SRC && udevadm settle")
    vm.check(f"head -c 64 /dev/urandom > {KEY} && head -c 64 /dev/urandom > {WRONG}")
    vm.check(
        "cryptsetup luksFormat --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000"
        f" --batch-mode --key-file {KEY} ${{SRC}}1",
        300,
    )
    dump = json.loads(vm.check("cryptsetup luksDump --dump-json-metadata ${SRC}1"))
    src.luks_offset = int(dump["segments"]["0"]["offset"])
    src.luks_uuid = vm.check("cryptsetup luksUUID ${SRC}1")
    vm.check(f"cryptsetup open --key-file {KEY} ${{SRC}}1 srccrypt", 300)
    vm.check("mkfs.ext4 -q -L locked-home /dev/mapper/srccrypt", 300)
    vm.check("mount /dev/mapper/srccrypt /mnt/a")
    src.files["luks"] = int(vm.check("fill /mnt/a 12 luks", 600))
    vm.check("umount /mnt/a", 300)
    src.ext_used["luks"], src.ext_free["luks"] = _ext(vm, "/dev/mapper/srccrypt")
    vm.check("cryptsetup close srccrypt")

    vm.check("pvcreate -y ${SRC}2 && vgcreate -y cbvg ${SRC}2", 300)
    vm.check("lvcreate -y -n home -L 96M cbvg && lvcreate -y -n xfs -L 64M cbvg", 300)
    vm.check("udevadm settle; mkfs.ext4 -q /dev/cbvg/home", 300)
    vm.check(f"{SMALL_XFS} -L locked-xfs /dev/cbvg/xfs", 300)
    vm.check("mount /dev/cbvg/home /mnt/b && mount /dev/cbvg/xfs /mnt/c")
    src.files["home"] = int(vm.check("fill /mnt/b 10 home", 600))
    src.files["xfs"] = int(vm.check("fill /mnt/c 8 xfs", 600))
    vm.check("umount /mnt/b /mnt/c", 300)
    src.ext_used["home"], src.ext_free["home"] = _ext(vm, "/dev/cbvg/home")
    src.pe_start = _lvm_bytes(vm, "pvs -o pe_start ${SRC}2")
    src.xfs_size = _lvm_bytes(vm, "lvs -o lv_size cbvg/xfs")
    src.vg_free = _lvm_bytes(vm, "vgs -o vg_free cbvg")
    src.vg_uuid = _lvm(vm, "vgs -o vg_uuid cbvg")
    src.lv_uuids = _lv_uuids(vm, "cbvg")
    vm.check("vgchange -an cbvg && udevadm settle", 300)
    assert src.vg_free > 0 and src.xfs_size > 0, "the VG must keep free extents"
    return src


def _lv_uuids(vm: Guest, options: str) -> dict[str, str]:
    rows = [row.split() for row in _lvm(vm, f"lvs -o lv_name,lv_uuid {options}").splitlines()]
    return {row[0]: row[1] for row in rows}


@pytest.fixture(scope="module")
def locked(live_iso: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locked]:
    work = tmp_path_factory.mktemp("locked")
    vm = Guest(
        workdir=work,
        iso=live_iso,
        kernel=direct_kernel(live_iso),
        disks=[
            Disk(blank(work / "src.img", DISK), "virtio", "LCK-SRC"),
            Disk(blank(work / "dst.img", DISK), "virtio", "LCK-DST"),
        ],
    )
    started = time.monotonic()
    vm.start()
    try:
        vm.shell(BOOT_TIMEOUT)
        record_boot("locked volumes (LUKS2, LVM), direct kernel", vm, started, BOOT_TIMEOUT)
        vm.wait_event("boot-ready", BOOT_TIMEOUT)
        for name, serial in (("SRC", "LCK-SRC"), ("DST", "LCK-DST")):
            vm.check(f"{name}=$(readlink -f /dev/disk/by-id/virtio-{serial}); test -b ${name}")
        built = time.monotonic()
        state = Locked(vm, build_source(vm))
        state.source.timings.append(f"source built in {time.monotonic() - built:.0f} s")
        yield state
        BOOT_TIMES.append("locked volumes: " + "; ".join(state.source.timings))
        vm.send("sync; poweroff\n")
        vm.wait_exit(300)
    finally:
        vm.close()


def _json(vm: Guest, command: str, timings: list[str], what: str) -> tuple[int, dict[str, Any]]:
    """Exit code and JSON result of ``command`` (stderr kept in /tmp/err): probe prints one
    indented document, clone JSON lines with the result last."""
    started = time.monotonic()
    code, out = vm.run(f"{command} 2>/tmp/err", 900)
    timings.append(f"{what} {time.monotonic() - started:.0f} s")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"{command}: exit {code}\n{out}\n{vm.check('cat /tmp/err')}"
    text = out[out.index("{") :] if lines[-1] == "{" else lines[-1]
    return code, json.loads(text)


def test_probe_maps_luks_and_lvm_natively(locked: Locked) -> None:
    vm, src = locked.vm, locked.source
    code, disk = _json(vm, f"clonebay probe --json --key-file {KEY} $SRC", src.timings, "probe")
    assert code == 0, vm.check("cat /tmp/err")
    parts = {p["number"]: p for p in disk["partitions"]}
    assert sorted(parts) == [1, 2]
    luks, pv = parts[1]["volume"], parts[2]["volume"]
    assert (luks["fstype"], luks["copy"]) == ("luks", "native"), luks
    assert luks["label"] == "locked-home", luks  # the ext4's label, read through the key
    # header and key slots, then the ciphertext under the ext4's allocated blocks (a subset)
    assert src.luks_offset + src.files["luks"] <= luks["used_bytes"]
    assert luks["used_bytes"] <= src.luks_offset + src.ext_used["luks"]
    assert (pv["fstype"], pv["copy"]) == ("lvm2-pv", "native"), pv
    notes = "\n".join(pv["notes"])
    assert "volume group cbvg" in notes and src.vg_uuid in notes, notes
    assert re.search(r"LV home: .*, ext4, .* used", notes), notes
    assert re.search(r"LV xfs: .*, xfs, copied whole", notes), notes
    # [0, pe_start), the home LV's allocated blocks, the XFS LV whole; no free extent
    floor = src.pe_start + src.files["home"] + src.xfs_size
    assert floor <= pv["used_bytes"] <= src.pe_start + src.ext_used["home"] + src.xfs_size
    locked.results["used"] = luks["used_bytes"] + pv["used_bytes"]
    locked.results["outside"] = disk["size"] - sum(p["size"] for p in parts.values())
    assert disk["size"] == DISK


def test_clone_copies_only_the_used_blocks(locked: Locked) -> None:
    vm, src = locked.vm, locked.source
    assert "used" in locked.results, "the probe test failed"
    command = f"clonebay clone --yes --json --key-file {KEY} $SRC $DST"
    code, result = _json(vm, command, src.timings, "clone")
    assert code == 0, f"{result}\n{vm.check('cat /tmp/err')}"
    copied = result["copied_bytes"]
    src.timings[-1] += f" ({copied / MIB:.0f} MiB copied of {DISK // MIB} MiB)"
    assert sum(src.files.values()) <= copied
    assert copied <= locked.results["used"] + locked.results["outside"]
    # far below the disk: none of the free space the tools report was copied
    free = src.ext_free["luks"] + src.ext_free["home"] + src.vg_free
    assert copied <= DISK - free, (copied, free)
    vm.check("partprobe $DST; udevadm settle; test -b ${DST}1 && test -b ${DST}2")
    locked.results["cloned"] = True


def test_a_wrong_key_file_is_refused_before_writing(locked: Locked) -> None:
    vm = locked.vm
    assert locked.results.get("cloned"), "the clone test failed"
    before = vm.digests()
    started = time.monotonic()
    code, out = vm.run(f"clonebay clone --yes --key-file {WRONG} $SRC $DST 2>&1", 600)
    locked.source.timings.append(f"wrong key refused in {time.monotonic() - started:.0f} s")
    assert code == REFUSED, out
    assert "none of the keys given opens" in out and "nothing was written" in out, out
    assert "Traceback" not in out, out
    assert vm.digests() == before


def test_the_target_luks_volume_opens_with_every_file(locked: Locked) -> None:
    vm, src = locked.vm, locked.source
    assert locked.results.get("cloned"), "the clone test failed"
    assert vm.check("cryptsetup luksUUID ${DST}1") == src.luks_uuid
    vm.check(f"cryptsetup open --key-file {KEY} ${{DST}}1 dstcrypt", 300)
    try:
        vm.check("e2fsck -fn /dev/mapper/dstcrypt", 300)
        vm.check("mount -o ro /dev/mapper/dstcrypt /mnt/a")
        try:
            _all_files(vm, "/mnt/a", "luks")
        finally:
            vm.check("umount /mnt/a")
    finally:
        vm.check("cryptsetup close dstcrypt")


def test_the_target_vg_activates_with_every_file(locked: Locked) -> None:
    vm, src = locked.vm, locked.source
    assert locked.results.get("cloned"), "the clone test failed"
    # the source's PV has the same UUIDs: lvm sees the target's p2 alone
    only = "--devices ${DST}2"
    assert _lvm(vm, f"vgs {only} -o vg_uuid cbvg") == src.vg_uuid
    assert _lv_uuids(vm, f"{only} cbvg") == src.lv_uuids
    vm.check(f"vgchange -ay {only} cbvg && udevadm settle", 300)
    try:
        dst = vm.check("basename $DST")
        for lv in ("home", "xfs"):  # each LV maps the target's p2, not the source's
            assert vm.check(f"dmsetup deps -o devname cbvg-{lv}").endswith(f"({dst}2)")
        vm.check("e2fsck -fn /dev/cbvg/home", 300)
        vm.check("xfs_repair -n /dev/cbvg/xfs", 300)
        vm.check("mount -o ro /dev/cbvg/home /mnt/b && mount -o ro /dev/cbvg/xfs /mnt/c")
        try:
            _all_files(vm, "/mnt/b", "home")
            _all_files(vm, "/mnt/c", "xfs")
        finally:
            vm.check("umount /mnt/b /mnt/c")
    finally:
        vm.check(f"vgchange -an {only} cbvg", 300)


def _all_files(vm: Guest, mount: str, name: str) -> None:
    """Every file recorded on the source, with its sha256, and no other."""
    recorded = vm.check(f"wc -l < /root/{name}.sha256")
    assert int(recorded) >= 3
    vm.check(f"(cd {mount} && sha256sum -c --quiet --strict /root/{name}.sha256)", 300)
    assert vm.check(f"find {mount} -type f | wc -l") == recorded
