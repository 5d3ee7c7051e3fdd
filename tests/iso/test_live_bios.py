"""The live ISO under SeaBIOS, booted as a CD through its boot menu (timeout), with disks on four
buses. One guest serves every check of this module, in order: the disk list, the SMART health
of the NVMe and SATA disks, a GPT clone onto a larger NVMe disk, an MBR disk through the stream
form onto a USB disk, a tape as a stream target, the TUI on tty1 and on the serial console; then
the guest powers off and the host checks every file of both copies against the disk factory's
record."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clonebay.engine.inspect import inspect_disk
from clonebay.testdisks import disks
from tests.diskcheck import assert_disk_matches
from tests.iso.conftest import blank, record_boot
from tests.iso.qemu import Disk, Guest

MIB = 1 << 20
BOOT_TIMEOUT = 600  # TCG on 2 cores: ~2 min; generous for a loaded CI machine
SERIALS = {"SRC-GPT": "virtio", "DST-NVME": "nvme", "SRC-MBR": "sata", "DST-USB": "usb"}


@pytest.fixture(scope="module")
def guest(
    live_iso: Path,
    iso_disks: dict[str, disks.BuiltDisk],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Guest]:
    work = tmp_path_factory.mktemp("bios")
    gpt, mbr = iso_disks["gpt"], iso_disks["mbr"]
    vm = Guest(
        workdir=work,
        iso=live_iso,
        firmware="bios",
        boot="cdrom",
        disks=[
            Disk(gpt.path, "virtio", "SRC-GPT", readonly=True),
            Disk(blank(work / "nvme.img", gpt.size + 256 * MIB), "nvme", "DST-NVME"),
            Disk(mbr.path, "sata", "SRC-MBR", readonly=True),
            Disk(blank(work / "usb.img", mbr.size + 64 * MIB), "usb", "DST-USB"),
        ],
    )
    started = time.monotonic()
    vm.start()
    try:
        vm.shell(BOOT_TIMEOUT)
        record_boot("BIOS, CD", vm, started, BOOT_TIMEOUT)
        vm.wait_event("boot-ready", BOOT_TIMEOUT)
        yield vm
    finally:
        vm.close()


def _by_serial(vm: Guest) -> dict[str, dict[str, object]]:
    listing = json.loads(vm.check("clonebay list --json"))
    return {str(d["serial"]): d for d in listing if d.get("kind", "disk") != "tape"}


def test_list_sees_every_bus_with_serials(guest: Guest) -> None:
    found = _by_serial(guest)
    for serial, transport in SERIALS.items():
        assert serial in found, f"{serial} missing from clonebay list: {sorted(found)}"
        assert found[serial]["transport"] == transport
        assert not found[serial]["in_use"], f"{serial} was mounted or assembled: {found[serial]}"
    # The CD and the squashfs loop device on it are the live system; no test disk is.
    listing = json.loads(guest.check("clonebay list --json"))
    live = sorted(str(d["path"]) for d in listing if d["live_medium"])
    assert live == ["/dev/loop0", "/dev/sr0"], live
    # The hands-off rules: nothing mounted from the test disks, no md/dm devices made.
    assert guest.check("ls /dev/md* /dev/dm-* 2>/dev/null | wc -l") == "0"
    text = guest.check("clonebay list")
    assert "SRC-GPT" in text and "DST-USB" in text


def test_probe_reports_smart_health_of_the_nvme_and_sata_disks(guest: Guest) -> None:
    """QEMU emulates SMART on both (tests/data/smart/README.md): "good", with the numbers
    smartctl itself reads in the guest (NVMe health log; ATA attribute 5)."""
    found = _by_serial(guest)
    for serial in ("DST-NVME", "SRC-MBR"):
        path = found[serial]["path"]
        health = json.loads(guest.check(f"clonebay probe --json {path}"))["health"]
        oracle = json.loads(guest.check(f"smartctl --json=c -a {path} || true"))
        assert health["verdict"] == "good" and health["passed"] is True, health
        assert health["temperature"] == oracle["temperature"]["current"], (health, oracle)
        if serial == "DST-NVME":
            log = oracle["nvme_smart_health_information_log"]
            assert health["media_errors"] == log["media_errors"], (health, log)
            assert health["percentage_used"] == log["percentage_used"], (health, log)
        else:
            table = oracle["ata_smart_attributes"]["table"]
            reallocated = next(row["raw"]["value"] for row in table if row["id"] == 5)
            assert health["reallocated"] == reallocated, (health, table)


def test_clone_gpt_onto_a_larger_nvme_disk(guest: Guest) -> None:
    found = _by_serial(guest)
    src, dst = found["SRC-GPT"]["path"], found["DST-NVME"]["path"]
    out = guest.check(f"clonebay clone --yes --grow proportional {src} {dst}", timeout=900)
    assert "cloned" in out


def test_mbr_disk_through_the_stream_form_onto_a_usb_disk(guest: Guest) -> None:
    found = _by_serial(guest)
    src, dst = found["SRC-MBR"]["path"], found["DST-USB"]["path"]
    guest.check(
        f"set -o pipefail; clonebay save {src} - | clonebay restore --yes --verify - {dst}",
        timeout=900,
    )


def test_a_tape_drive_is_a_stream_target(guest: Guest) -> None:
    """QEMU has no tape: scsi_debug with ptype=1 gives the st driver a tape drive. Its emulation
    (Linux 6.12) accepts writes but stores no tape data and refuses WRITE FILEMARKS, so this
    checks discovery and the write path (records accepted, the filemark failure only a warning);
    the record layout itself is checked in tests/unit/test_tape.py."""
    guest.check("modprobe scsi_debug ptype=1 dev_size_mb=64 && udevadm settle")
    listing = json.loads(guest.check("clonebay list --json"))
    tapes = [d for d in listing if d.get("kind") == "tape"]
    assert [t["path"] for t in tapes] == ["/dev/nst0"], listing
    assert tapes[0]["model"] == "scsi_debug"
    assert "image stream target" in guest.check("clonebay list")
    src = _by_serial(guest)["SRC-MBR"]["path"]
    # Partition 6 is the small FAT12 logical partition: it fits the 64 MiB RAM tape.
    out = guest.check(f"mt -f /dev/nst0 rewind; clonebay save --partition 6 {src} /dev/nst0", 300)
    assert "into /dev/nst0" in out, out
    assert guest.check("mt -f /dev/nst0 status | grep -o 'block number=[0-9]*'") != (
        "block number=0"
    )


def test_tui_is_up_on_tty1(guest: Guest) -> None:
    guest.wait_event("tui-start /dev/tty1", 120)
    deadline = time.monotonic() + 180
    screen = ""
    while time.monotonic() < deadline:  # the first start imports textual: tens of s under TCG
        screen = guest.check("cat /dev/vcs1 | tr -s ' ' | tr -d '\\0'")
        if "Clone disk" in screen:
            break
        guest.check("sleep 5")
    assert "Clone disk" in screen and "Restore image" in screen, screen
    guest.wait_event("tui-ready /dev/tty1", 60)  # the TUI said so itself, once drawn


def test_tui_is_usable_on_the_serial_console(guest: Guest) -> None:
    pyte = pytest.importorskip("pyte", reason="pyte (a terminal emulator) reads the TUI's screen")
    cols, rows = 100, 30
    start = len(guest.output)
    guest.send(f"stty rows {rows} cols {cols}; TERM=xterm-256color clonebay; echo __RC_$?__\n")
    screen = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(screen)
    fed = start
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        guest.wait_output(rb".", 30, fed)
        stream.feed(bytes(guest.output[fed:]))
        fed = len(guest.output)
        if "Clone disk" in "\n".join(screen.display):
            break
        time.sleep(1)
    text = "\n".join(screen.display)
    assert "Clone disk" in text and "Save image" in text, text
    guest.send("d")  # the Disks screen lists the machine's disks by serial
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "SRC-GPT" not in "\n".join(screen.display):
        time.sleep(1)
        stream.feed(bytes(guest.output[fed:]))
        fed = len(guest.output)
    assert "SRC-GPT" in "\n".join(screen.display), "\n".join(screen.display)
    guest.send("\x11")  # ctrl+q quits from any screen, after asking (with "Stay" focused)
    while time.monotonic() < deadline and "Leave clonebay?" not in "\n".join(screen.display):
        time.sleep(1)
        stream.feed(bytes(guest.output[fed:]))
        fed = len(guest.output)
    guest.send("\t")  # focus "Quit"
    time.sleep(2)  # one key at a time: Textual reads a burst of bytes as one escape sequence
    guest.send("\r")
    match = guest.wait_output(rb"__RC_(\d+)__", 120, start)
    assert match.group(1) == b"0"
    guest.run("stty sane -echo cols 200 rows 50; clear")


def test_copies_hold_every_file_after_power_off(
    guest: Guest, iso_disks: dict[str, disks.BuiltDisk], tmp_path: Path
) -> None:
    guest.send("sync; poweroff\n")
    assert guest.wait_exit(timeout=300) == 0
    work = guest.workdir
    gpt, mbr = iso_disks["gpt"], iso_disks["mbr"]
    table = inspect_disk(str(work / "nvme.img")).table
    layout = {p.number: (p.start, p.size) for p in table.partitions}
    assert_disk_matches(work / "nvme.img", gpt, tmp_path, layout)
    assert max(end for end in (s + z for s, z in layout.values())) > gpt.size - 2 * MIB
    assert_disk_matches(work / "usb.img", mbr, tmp_path)
    assert re.search(rb"clonebay", bytes(guest.output))
