"""Capture smartctl's JSON for the disks QEMU emulates, from inside the live ISO (README.md here).

Boots the ISO under QEMU with one blank disk on each bus tests/iso/test_live_bios.py uses
(virtio, NVMe, SATA, USB), runs ``smartctl --json=c -a`` on each from the guest's serial shell
and writes its output to ``<bus>.json`` in ``--out``; also the live CD's drive (``cdrom.json``)
and the USB disk asked as a plain SCSI disk (``usb-scsi.json``, ``-d scsi``: no SMART there):

    .venv/bin/python tests/data/smart/capture.py --iso ISO [--out tests/data/smart]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.iso.qemu import Disk, Guest

MIB = 1 << 20
BUSES = ("virtio", "nvme", "sata", "usb")


def blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iso", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/clonebay-smart-capture"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    serials = {bus: f"SMART-{bus.upper()}" for bus in BUSES}
    vm = Guest(
        workdir=args.work,
        iso=args.iso,
        disks=[Disk(blank(args.work / f"{b}.img", 512 * MIB), b, serials[b]) for b in BUSES],
    )
    vm.start()
    try:
        vm.shell(600)
        listing = json.loads(vm.check("clonebay list --json"))
        paths = {str(d["serial"]): str(d["path"]) for d in listing if d.get("serial")}
        version = vm.check("smartctl --version | head -1")
        print(version)
        asked = {bus: paths[serials[bus]] for bus in BUSES}
        asked |= {"cdrom": "/dev/sr0", "usb-scsi": f"-d scsi {asked['usb']}"}
        for name, device in asked.items():
            _, out = vm.run(f"smartctl --json=c -a {device}", 120)
            data = json.loads(out)  # one line of JSON, whatever smartctl's exit status
            (args.out / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
            status = data["smartctl"]["exit_status"]
            print(f"{name}: {device} exit status {status}")
    finally:
        vm.close()


if __name__ == "__main__":
    main()
