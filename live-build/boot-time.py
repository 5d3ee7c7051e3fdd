"""Measure the live ISO's boot: power-on to the TUI's first screen on tty1, as docs/live.md's
"Boot time" table records it. QEMU under TCG (2 vCPUs, 2 GiB), SeaBIOS, the ISO as a CD through
its boot menu, four blank disks on virtio, NVMe, SATA and USB (as tests/iso/test_live_bios.py
boots it). Times are from QEMU's start to the guest's events (``tui-start /dev/tty1`` when the
menu starts the TUI, ``tui-ready /dev/tty1`` when its first screen is drawn) and to the serial
root shell; then systemd-analyze's account and its slowest units. The host's load is printed:
other guests on the same CPUs move the figures by a factor of two.

    .venv/bin/python live-build/boot-time.py --iso ISO [--runs N] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.iso.qemu import Disk, Guest

MIB = 1 << 20


def blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def once(iso: Path, work: Path, journal: int) -> None:
    work.mkdir(parents=True, exist_ok=True)
    vm = Guest(
        workdir=work,
        iso=iso,
        firmware="bios",
        boot="cdrom",
        disks=[
            Disk(blank(work / "a.img", 512 * MIB), "virtio", "A"),
            Disk(blank(work / "b.img", 512 * MIB), "nvme", "B"),
            Disk(blank(work / "c.img", 512 * MIB), "sata", "C"),
            Disk(blank(work / "d.img", 512 * MIB), "usb", "D"),
        ],
    )
    load = Path("/proc/loadavg").read_text().split()[0]
    started = time.monotonic()
    vm.start()
    try:
        vm.wait_event("tui-ready /dev/tty1", 600)
        vm.shell(600)
        shell = time.monotonic() - started
        times = {e: t - started for e, t in vm.event_times.items()}
        vm.run("systemctl is-system-running --wait", 600)
        analyze = vm.check("systemd-analyze 2>&1 | head -1")
        blame = vm.check("systemd-analyze blame 2>&1 | head -8")
        chain = vm.check("systemd-analyze critical-chain getty@tty1.service 2>&1 | tail -n +3")
        print(
            f"host load {load}: tui-start {times.get('tui-start /dev/tty1', 0):.1f} s,"
            f" TUI drawn {times['tui-ready /dev/tty1']:.1f} s, serial shell by {shell:.0f} s"
        )
        print(f"  {analyze}")
        print("  " + "\n  ".join(blame.splitlines()))
        print("  tty1's chain:\n  " + "\n  ".join(chain.splitlines()))
        if journal:
            lines = vm.check(f"journalctl -b -o short-monotonic --no-pager | head -{journal}", 300)
            print("  journal:\n  " + "\n  ".join(lines.splitlines()))
    finally:
        vm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iso", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/clonebay-boot-time"))
    parser.add_argument("--journal", type=int, default=0, help="print the journal's first N lines")
    args = parser.parse_args()
    for n in range(args.runs):
        once(args.iso, args.work / f"run{n}", args.journal)


if __name__ == "__main__":
    main()
