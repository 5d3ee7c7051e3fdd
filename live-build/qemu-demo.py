"""`make qemu`: boot the live ISO in QEMU with two demo disks, to see the real thing.

Disk 1 (virtio, serial DEMO-SOURCE) is a GPT disk from the test-disk factory: an EFI system
partition, NTFS with a Windows-like tree, ext4 with a /usr-like tree, swap. Disk 2 (NVMe, serial
DEMO-TARGET) is empty and a little larger. With a display (DISPLAY set) QEMU opens a window showing
tty1, where the TUI starts; without one, the serial console (a root shell) is on this terminal:
type `clonebay` there for the TUI, `clonebay list` for the disks, `poweroff` to leave
(or Ctrl-A X). The disks are built once in /var/tmp/clonebay-demo and kept.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from clonebay.testdisks import disks

DEMO = Path(os.environ.get("CLONEBAY_DEMO_DIR", "/var/tmp/clonebay-demo"))
MIB = 1 << 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iso", required=True, type=Path)
    parser.add_argument("--uefi", action="store_true", help="boot with OVMF instead of SeaBIOS")
    args = parser.parse_args()
    DEMO.mkdir(parents=True, exist_ok=True)
    source = DEMO / "source.img"
    if not source.exists():
        print("building the demo source disk (a minute)...", flush=True)
        built = disks.gpt_disk(DEMO / "building.img", disks.QUICK, work=DEMO)
        built.path.rename(source)
    target = DEMO / "target.img"
    if not target.exists():
        with open(target, "wb") as f:
            f.truncate(source.stat().st_size + 512 * MIB)
    argv = [
        *("qemu-system-x86_64", "-machine", "q35", "-m", "2048", "-smp", "2"),
        *(["-accel", "kvm", "-cpu", "host"] if os.environ.get("KVM") else []),
        *(["-accel", "tcg", "-cpu", "max"] if not os.environ.get("KVM") else []),
        *("-cdrom", str(args.iso), "-boot", "d"),
        *("-drive", f"file={source},if=none,id=src,format=raw,cache=unsafe"),
        *("-device", "virtio-blk-pci,drive=src,serial=DEMO-SOURCE"),
        *("-drive", f"file={target},if=none,id=dst,format=raw,cache=unsafe"),
        *("-device", "nvme,drive=dst,serial=DEMO-TARGET"),
    ]
    if args.uefi:
        vars_copy = DEMO / "OVMF_VARS.fd"
        shutil.copyfile("/usr/share/OVMF/OVMF_VARS_4M.fd", vars_copy)
        argv += [
            *("-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"),
            *("-drive", f"if=pflash,format=raw,file={vars_copy}"),
        ]
    if not os.environ.get("DISPLAY"):
        argv += ["-display", "none", "-serial", "mon:stdio"]
        print("serial console on this terminal: a root shell comes up in 1-2 min (TCG);")
        print("type `clonebay` for the TUI, `poweroff` to leave (or Ctrl-A X)", flush=True)
    os.execvp(argv[0], argv)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
