"""Windows' identity read from a disk without mounting it: probe and the Plan show each
Windows' computer name, sysprep state (generalized or not) and machine SID before anything is
copied, so a technician sees that an image is not generalized before deploying it.

The hives are read with ntfscat (libntfs, no mount, nothing written) from a read-only loop
device over the partition, into a private temporary folder, and parsed by hivex
(engine/postcopy/windows.py). A volume that is encrypted, or whose hives cannot be read, has
no such facts (None); the pass itself reads them again from the target.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from clonebay.engine.inspect import DiskReport
from clonebay.engine.postcopy import windows
from clonebay.errors import ClonebayError
from clonebay.model import Partition, VolumeState
from clonebay.system import loopdev
from clonebay.system.run import run

HIVES = ("SYSTEM", "SOFTWARE", "SAM")
CONFIG = "/Windows/System32/config/"


def _cat(device: str, name: str, out: Path) -> Path | None:
    proc = run(["ntfscat", device, CONFIG + name], check=False)
    if proc.returncode != 0 or not proc.stdout:
        return None
    out.write_bytes(proc.stdout)
    return out


def identity_of(disk: str, part: Partition, where: str) -> windows.WindowsIdentity | None:
    """The identity of the Windows on partition ``part`` of ``disk``, or None."""
    device = loopdev.attach(disk, offset=part.start, size=part.size, read_only=True)
    try:
        with tempfile.TemporaryDirectory(prefix="clonebay-hives-") as tmp:
            got = {name: _cat(device, name, Path(tmp) / name) for name in HIVES}
            system = got["SYSTEM"]
            if system is None:
                return None
            try:
                names = windows.computer_names(system)
                state = windows.sysprep_state(system, got["SOFTWARE"])
                sid = windows.machine_sid(got["SAM"]) if got["SAM"] else None
            except ClonebayError:
                return None
            name = next((n for n in names.values() if n), "")
            return windows.WindowsIdentity(where, name, state, sid)
    finally:
        loopdev.detach(device)


def windows_on(report: DiskReport) -> dict[int, windows.WindowsIdentity]:
    """Every Windows of a probed disk, by partition number."""
    found = {}
    for pr in report.partitions:
        vol = pr.volume
        if vol is None or vol.fstype != "ntfs" or vol.state is VolumeState.ENCRYPTED:
            continue
        try:
            ident = identity_of(report.path, pr.partition, f"p{pr.partition.number}")
        except ClonebayError:  # no loop device (not root, none free): no facts, no failure
            continue
        if ident is not None:
            found[pr.partition.number] = ident
    return found


def windows_json(ident: windows.WindowsIdentity) -> dict[str, object]:
    return {
        "computer_name": ident.computer_name,
        "generalized": ident.sysprep.generalized,
        "sysprep": ident.sysprep.text(),
        "machine_sid": ident.sid,
    }


def facts_lines(report: DiskReport) -> list[str]:
    """One short line per Windows on a disk, for a Plan: name, generalized or not, SID."""
    lines = []
    for ident in windows_on(report).values():
        word = {True: "generalized", False: "NOT generalized (copies keep its SID)", None: ""}
        parts = [ident.computer_name, word[ident.sysprep.generalized]]
        parts.append(f"machine SID {ident.sid}" if ident.sid else "")
        lines.append(f"Windows on {ident.where}: " + ", ".join(p for p in parts if p))
    return lines
