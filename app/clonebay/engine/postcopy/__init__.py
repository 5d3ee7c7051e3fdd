"""The post-copy pass: after clone, restore and receive (and ``clonebay fixup DISK``), make the
target boot on the machine it goes into and give it its own identity when asked.

Offline, on the target only, never on a hibernated, dirty or encrypted volume (skipped with
the reason). Boot: the UEFI removable fallback loader, an NVRAM entry, GRUB reinstalled when
its boot code would be stale, Windows' BCD and MountedDevices patched after an MBR move.
Identity (only when asked: ``--hostname``, a mapping row, ``--new-ids``): host names, machine
ids, SSH host keys, disk and filesystem ids, and the files that name them. Every change is
read back and listed in a PostcopyReport.
"""

from clonebay.engine.postcopy.apply import CopyFacts, PostcopyError, run_pass
from clonebay.engine.postcopy.changes import Change, PostcopyReport, Skip
from clonebay.engine.postcopy.facts import SourceFacts, copy_facts
from clonebay.engine.postcopy.options import PostcopyOptions

__all__ = [
    "Change",
    "CopyFacts",
    "PostcopyError",
    "PostcopyOptions",
    "PostcopyReport",
    "Skip",
    "SourceFacts",
    "copy_facts",
    "run_pass",
]
