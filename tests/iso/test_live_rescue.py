"""Failing disks inside the live system: real kernel I/O errors, not FUSE.

The source is a virtio disk behind QEMU's blkdebug driver, which fails every read request that
covers one of the chosen sectors with EIO: the guest kernel logs an I/O error and the read fails,
as a disk's bad sector does. It holds a GPT disk with an ext4 partition (mkfs.ext4 -d on the host)
whose big.bin covers the bad sectors (debugfs, the oracle, says where its blocks are). One guest
(direct kernel boot) serves every check, in order: `save --rescue` into the guest's /tmp with the
map checked by GNU ddrescuelog; `clone --rescue` onto a SATA disk; a clone onto a slow USB disk
that is removed mid-copy through QEMU's monitor (device_del), then plugged in again (drive_add,
device_add) and the clone resumed onto it with --resume. Then the host checks every file of both
rescued clones: as on the source, but zeros exactly where the bad sectors are.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine.test_rescue import Source, assert_files_but_bad, build_source, disk_files
from tests.iso.conftest import blank
from tests.iso.qemu import Disk, Guest, direct_kernel

MIB = 1 << 20
SECTOR, BLOCK = 512, 4096
BOOT_TIMEOUT = 600
DONE_WITH_ERRORS = 10


class Bad:
    """The source on the host (tests/engine/test_rescue.py's kind) and its bad sectors (disk
    positions, lengths), both inside big.bin."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.disk = source.disk
        self.p1 = source.p1
        self.ranges = [(source.big_byte(0.3), BLOCK), (source.big_byte(0.7) + 5 * SECTOR, SECTOR)]

    def rules(self, path: Path) -> Path:
        """blkdebug rules: each bad sector fails every read request that covers it."""
        sectors = [s for a, n in self.ranges for s in range(a // SECTOR, (a + n) // SECTOR)]
        path.write_text(
            "".join(
                f'[inject-error]\nevent = "read_aio"\nerrno = "5"\nsector = "{s}"\nonce = "off"\n\n'
                for s in sectors
            )
        )
        return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Bad:
    files = {"big.bin": random.Random(7).randbytes(24 * MIB), "a.txt": b"kept\n" * 100}
    return Bad(build_source(tmp_path_factory.mktemp("rescue-src"), files))


@pytest.fixture(scope="module")
def guest(live_iso: Path, bad: Bad, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    work = tmp_path_factory.mktemp("rescue-vm")
    vm = Guest(
        workdir=work,
        iso=live_iso,
        kernel=direct_kernel(live_iso),
        disks=[
            Disk(bad.disk, "virtio", "SRC-BAD", readonly=True, blkdebug=bad.rules(work / "bad")),
            Disk(blank(work / "sata.img", 128 * MIB), "sata", "DST-RESCUE"),
            Disk(blank(work / "usb.img", 128 * MIB), "usb", "DST-GONE", write_bps=MIB),
        ],
    )
    vm.start()
    try:
        vm.shell(BOOT_TIMEOUT)
        vm.wait_event("boot-ready", BOOT_TIMEOUT)
        yield vm
    finally:
        vm.close()


def _path(vm: Guest, serial: str) -> str:
    listing = json.loads(vm.check("clonebay list --json"))
    (path,) = [d["path"] for d in listing if d.get("serial") == serial]
    return str(path)


def _result(vm: Guest, command: str) -> tuple[int, dict[str, Any]]:
    """Exit code and JSON result of ``command --json`` in the guest."""
    rc, out = vm.run(f"{command} --json 2>/tmp/err", 900)
    last = [line for line in out.splitlines() if line.startswith("{")]
    assert last, f"{command}: {out}\n{vm.check('cat /tmp/err')}"
    return rc, json.loads(last[-1])


def test_save_rescue_maps_the_real_bad_sectors(guest: Guest, bad: Bad) -> None:
    src = _path(guest, "SRC-BAD")
    assert "I/O error" not in guest.check("dmesg | tail -3")  # nothing read the bad ones yet
    rc, result = _result(guest, f"clonebay save --rescue {src} /tmp/r.image")
    assert rc == DONE_WITH_ERRORS, result
    lost = sorted((int(u["offset"]) + bad.p1, int(u["length"])) for u in result["unreadable"])
    assert lost == sorted(bad.ranges)
    assert "I/O error" in guest.check("dmesg | grep 'I/O error' | tail -1")  # the kernel's own
    listed = guest.check("ddrescuelog --list-blocks=- --block-size=512 /tmp/r.image.map")
    want = [s for a, n in sorted(bad.ranges) for s in range(a // SECTOR, (a + n) // SECTOR)]
    assert [int(n) for n in listed.split()] == want
    assert guest.run("clonebay verify /tmp/r.image", 300)[0] == 0


def test_clone_rescue_onto_a_sata_disk(guest: Guest, bad: Bad) -> None:
    src, dst = _path(guest, "SRC-BAD"), _path(guest, "DST-RESCUE")
    rc, result = _result(
        guest, f"clonebay clone --rescue --yes --no-fixup --mapfile /tmp/c.map {src} {dst}"
    )
    assert rc == DONE_WITH_ERRORS, result
    assert sorted((int(u["start"]), int(u["length"])) for u in result["unreadable"]) == sorted(
        bad.ranges
    )


def test_a_target_unplugged_mid_clone_is_a_clear_error(guest: Guest) -> None:
    """The USB target (written at 1 MiB/s: ~35 s for the 33 MiB in use) is removed through
    QEMU's monitor once the clone has checkpointed it (its journal is there): the clone ends
    with a device error that says the target is incomplete and how to resume."""
    src, dst = _path(guest, "SRC-BAD"), _path(guest, "DST-GONE")
    guest.check(  # in the background: a subshell that starts it and returns
        f"( (clonebay clone --rescue --yes --no-fixup --mapfile /tmp/g.map {src} {dst}"
        " >/tmp/gone.out 2>&1; echo rc=$? >>/tmp/gone.out) & )"
    )
    deadline = time.monotonic() + 300
    # the target's journal has a checkpoint (the first comes 5 s into the copy): resumable
    copying = "test -e /tmp/clone-SRC-BAD-to-DST-GONE.json"
    while time.monotonic() < deadline and guest.run(copying, 30)[0] != 0:
        time.sleep(1)
    said = guest.monitor("device_del dev3")  # dev3: the third test disk, the USB one
    assert "Error" not in said and "not found" not in said, said
    gone = "! test -e /sys/block/" + dst.removeprefix("/dev/")
    assert guest.run(f"sleep 5; {gone}", 60)[0] == 0, "the USB disk is still in the guest"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and "rc=" not in guest.check("cat /tmp/gone.out"):
        time.sleep(2)
    out = guest.check("cat /tmp/gone.out")
    assert "rc=" in out, "the clone did not end after its target went away"
    rc = int(out.rsplit("rc=", 1)[1].split()[0])
    assert rc == 8, out
    assert "Traceback" not in out and "incomplete" in out and "--resume" in out, out


def test_the_unplugged_target_plugged_in_again_resumes(guest: Guest) -> None:
    """The USB disk comes back (the same backing file and serial, through the monitor, now
    without throttling); the clone goes on with --resume onto it, found by its serial wherever
    its node is now, and ends as a rescued clone (exit 10); the host checks its files below."""
    work = guest.workdir
    for command in (
        f"drive_add 0 file={work / 'usb.img'},if=none,id=d3again,format=raw,cache=unsafe,"
        "file.locking=off",
        "device_add usb-storage,bus=xhci.0,drive=d3again,serial=DST-GONE,removable=on,id=dev3b",
    ):
        said = guest.monitor(command)
        assert "Error" not in said and "not found" not in said, (command, said)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listing = json.loads(guest.check("clonebay list --json"))
        if any(d.get("serial") == "DST-GONE" for d in listing):
            break
        time.sleep(2)
    src, dst = _path(guest, "SRC-BAD"), _path(guest, "DST-GONE")
    rc, out = guest.run(
        f"clonebay clone --rescue --resume --yes --no-fixup --mapfile /tmp/g.map {src} {dst} 2>&1",
        900,
    )
    assert rc == 10, out
    assert "Traceback" not in out, out
    assert guest.run("ls /tmp/clone-*", 30)[0] != 0  # done: its journal is gone


def test_a_rescue_bounds_each_read_by_the_disks_command_timeout(guest: Guest) -> None:
    """While a rescue reads the SATA disk, its kernel command timeout (30 s) is 10 s, so a
    read that hangs in a dying sector gives up sooner; it is 30 s again afterwards (sampled
    in the guest every 0.1 s during a save --rescue of that disk)."""
    disk = _path(guest, "DST-RESCUE").removeprefix("/dev/")
    timeout = f"/sys/block/{disk}/device/timeout"
    assert guest.check(f"cat {timeout}").strip() == "30"
    guest.check(
        f"( (while true; do cat {timeout}; sleep 0.1; done) >/tmp/to.log 2>&1 &"
        " echo $! >/tmp/to.pid )"
    )
    rc, out = guest.run(f"clonebay save --rescue /dev/{disk} /tmp/sata.image 2>&1", 900)
    guest.check("kill $(cat /tmp/to.pid)")
    assert rc == 0, out
    seen = guest.check("cat /tmp/to.log").split()
    assert "10" in seen, seen
    assert guest.check(f"cat {timeout}").strip() == "30"


def test_the_rescued_clone_holds_every_readable_byte(
    guest: Guest, bad: Bad, tmp_path: Path
) -> None:
    guest.send("sync; poweroff\n")
    guest.wait_exit(300)
    for name in ("sata.img", "usb.img"):  # cloned at once; unplugged, replugged and resumed
        (tmp_path / name).mkdir()
        files, fsck = disk_files(guest.workdir / name, tmp_path / name)
        assert fsck.startswith("0:"), (name, fsck)
        assert_files_but_bad(bad.source, files, bad.ranges)
