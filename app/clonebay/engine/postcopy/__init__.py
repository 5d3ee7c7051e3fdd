"""The post-copy pass: after clone, restore and receive (and ``clonebay fixup DISK``), make the
target boot on the machine it goes into and give it its own identity when asked.

Offline, on the target only, never on a hibernated, dirty or encrypted volume (skipped with
the reason). Boot: the UEFI removable fallback loader, an NVRAM entry, GRUB reinstalled when
its boot code would be stale, Windows' BCD and MountedDevices patched after an MBR move.
Identity (only when asked: ``--hostname``, a mapping row, ``--new-ids``): host names, machine
ids, SSH host keys, disk and filesystem ids, and the files that name them. Every change is
read back and listed in a PostcopyReport.

The names below are loaded on first use (as clonebay.engine's are), so the TUI's first screen
does not wait for the whole pass to be imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clonebay.engine.postcopy.apply import CopyFacts, PostcopyError, run_pass
    from clonebay.engine.postcopy.changes import Change, PostcopyReport, Skip
    from clonebay.engine.postcopy.facts import SourceFacts, copy_facts
    from clonebay.engine.postcopy.options import PostcopyOptions

_NAMES = {
    "CopyFacts": "clonebay.engine.postcopy.apply",
    "PostcopyError": "clonebay.engine.postcopy.apply",
    "run_pass": "clonebay.engine.postcopy.apply",
    "Change": "clonebay.engine.postcopy.changes",
    "PostcopyReport": "clonebay.engine.postcopy.changes",
    "Skip": "clonebay.engine.postcopy.changes",
    "SourceFacts": "clonebay.engine.postcopy.facts",
    "copy_facts": "clonebay.engine.postcopy.facts",
    "PostcopyOptions": "clonebay.engine.postcopy.options",
}

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


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
