"""LVM physical volumes made by lvm2's own tools on loop devices, without device-mapper.

The test machine's kernel has no device-mapper, so no LV can be activated: every lvm command
runs with ``global/activation = 0`` (lvcreate then writes the metadata and skips the kernel),
``-Zn`` (nothing to zero through), and with backups off so nothing lands in /etc/lvm. Each
command gets a device filter (and global_filter, no devices file) that accepts only the loop
devices of the test: lvm never looks at (let alone writes) any other disk of the machine. A
filter rather than ``--devices``, which pvck 2.03.16 ignores: it then checks nothing ("device is
not in devices list") and still exits 0.

An LV's content is written straight into the PV's backing file at the extents ``lvs`` reports
(``lvm_segments``): what an activated LV would have written there. Thin pools and snapshots
cannot be created without the kernel, so ``restore_with`` adds them the way an administrator
restores a VG: ``vgcfgbackup`` to a file, the LVs added to the text, ``vgcfgrestore --force``
(which checks the result like any metadata it writes).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from clonebay.system import loopdev
from clonebay.system.run import output

CONFIG = "global { activation = 0 } backup { backup = 0 archive = 0 }"
ENV = {"LVM_SUPPRESS_FD_WARNINGS": "1"}
MiB = 1 << 20


def lvm(devices: Sequence[str], program: str, *args: str) -> str:
    """Run an lvm2 program that may only see ``devices``."""
    accept = ", ".join(f'"a|^{re.escape(dev)}$|"' for dev in devices)
    only = f'[{accept}, "r|.*|"]'
    config = f"{CONFIG} devices {{ use_devicesfile = 0 filter = {only} global_filter = {only} }}"
    return output([program, "--config", config, *args], env=ENV)


def report(devices: Sequence[str], program: str, fields: str, *args: str) -> list[dict[str, str]]:
    """The rows of ``pvs``/``vgs``/``lvs`` as JSON, sizes in bytes without suffix."""
    text = lvm(devices, program, "--reportformat", "json", "--units", "b", "--nosuffix",
               "-o", fields, *args)  # fmt: skip
    rows: list[dict[str, str]] = next(iter(json.loads(text)["report"][0].values()))
    return rows


@contextlib.contextmanager
def loops(*paths: Path) -> Iterator[list[str]]:
    """A loop device over each file, detached when the block ends (only these)."""
    devices: list[str] = []
    try:
        for path in paths:
            devices.append(loopdev.attach(str(path)))
        yield devices
    finally:
        for dev in devices:
            loopdev.detach(dev)


@dataclass(frozen=True)
class LvSegment:
    """One segment of an LV as ``lvs --segments`` reports it, in bytes."""

    lv: str
    lv_offset: int
    pv_offset: int
    length: int


def lvm_segments(devices: Sequence[str], vg: str) -> list[LvSegment]:
    """Where each LV's segments lie in its PV (single-PV VG), from lvs, pvs and vgs."""
    pe_start = int(report(devices, "pvs", "pe_start")[0]["pe_start"])
    extent = int(report(devices, "vgs", "vg_extent_size", vg)[0]["vg_extent_size"])
    found = []
    for row in report(devices, "lvs", "lv_name,seg_start_pe,seg_size_pe,seg_pe_ranges", vg):
        match = re.fullmatch(r".*:(\d+)-(\d+)", row["seg_pe_ranges"])
        assert match, row
        first = int(match.group(1))
        count = int(row["seg_size_pe"])
        found.append(LvSegment(row["lv_name"], int(row["seg_start_pe"]) * extent,
                               pe_start + first * extent, count * extent))  # fmt: skip
    return found


def write_lv(pv_file: Path, segments: Sequence[LvSegment], lv: str, content: Path) -> None:
    """Write ``content`` (an LV's bytes) into the PV's file at the LV's extents."""
    with open(content, "rb") as src, open(pv_file, "r+b") as dst:
        for seg in (s for s in segments if s.lv == lv):
            data = os.pread(src.fileno(), seg.length, seg.lv_offset)
            os.pwrite(dst.fileno(), data.ljust(seg.length, b"\0"), seg.pv_offset)


def read_lv(pv_file: Path, segments: Sequence[LvSegment], lv: str, out: Path) -> Path:
    """The LV's bytes gathered from the PV's file into ``out``."""
    with open(pv_file, "rb") as src, open(out, "wb") as dst:
        for seg in sorted((s for s in segments if s.lv == lv), key=lambda s: s.lv_offset):
            os.pwrite(
                dst.fileno(), os.pread(src.fileno(), seg.length, seg.pv_offset), seg.lv_offset
            )
    return out


def restore_with(devices: Sequence[str], vg: str, edit: Callable[[str], str], work: Path) -> None:
    """vgcfgbackup, ``edit`` the text, vgcfgrestore --force: the VG as edited, written by lvm."""
    backup = work / f"{vg}.vg"
    lvm(devices, "vgcfgbackup", "-f", str(backup), vg)
    backup.write_text(edit(backup.read_text()))
    lvm(devices, "vgcfgrestore", "--force", "-f", str(backup), vg)


def linear_lv(name: str, uuid: str, extents: int, pe: int, visible: bool = True) -> str:
    """The text of a one-segment linear LV on pv0, as lvm2 writes it."""
    status = '"READ", "WRITE", "VISIBLE"' if visible else '"READ", "WRITE"'
    return (
        f'{name} {{\nid = "{uuid}"\nstatus = [{status}]\nflags = []\nsegment_count = 1\n'
        f'segment1 {{\nstart_extent = 0\nextent_count = {extents}\ntype = "striped"\n'
        f'stripe_count = 1\nstripes = ["pv0", {pe}]\n}}\n}}\n'
    )


def replace_lvs(text: str, lvs: str) -> str:
    """A VG backup's text with its logical_volumes section replaced by ``lvs``."""
    start = text.index("logical_volumes {")
    depth, pos = 0, start
    while True:
        if text[pos] == "{":
            depth += 1
        elif text[pos] == "}":
            depth -= 1
            if depth == 0:
                break
        pos += 1
    return text[:start] + "logical_volumes {\n" + lvs + "}" + text[pos + 1 :]
