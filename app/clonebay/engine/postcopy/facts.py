"""What the copy changed that the post-copy pass must know: which partitions moved, the
table's kind, and whether the target is a fixed disk of the machine the live system runs on
(the NVRAM entry's default)."""

from __future__ import annotations

import os

from clonebay.engine.postcopy.apply import CopyFacts
from clonebay.system.parttable import read_table
from clonebay.system.udev import LIVE_MEDIUM_MOUNTS, find_disk


def copy_facts(source: dict[int, int] | None, target: str) -> CopyFacts:
    """What the copy changed: partitions whose start moved (``source``: each source partition's
    start by number), the table's kind, and whether the target is a fixed disk of this machine
    (for the NVRAM entry's default)."""
    after = read_table(target)
    moved = {}
    if source is not None:
        old = source
        moved = {
            p.number: (old[p.number], p.start)
            for p in after.partitions
            if p.number in old and old[p.number] != p.start
        }
    disk = find_disk(target)
    fixed = bool(disk and not disk.removable and disk.transport not in {"usb", "loop", "file", ""})
    own = fixed and any(os.path.isdir(m) for m in LIVE_MEDIUM_MOUNTS)  # in the live system
    return CopyFacts(moved, after.kind, own)
