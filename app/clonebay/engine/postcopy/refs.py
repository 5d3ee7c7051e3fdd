"""Files that name a disk or filesystem by its id, made to follow new ids (``--new-ids``).

In a Linux root: /etc/fstab, /etc/crypttab, /etc/default/grub (a ``resume=UUID=`` on the
kernel command line), /etc/initramfs-tools/conf.d/resume and /boot/grub/grub.cfg. On an ESP:
the small grub.cfg files a signed GRUB reads first (``search.fs_uuid ...``). An id is replaced
wherever it appears as a whole token, in any letter case the file used (FAT and NTFS ids are
upper case in fstab, GPT GUIDs lower case). Each changed file is read back.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from clonebay.engine.postcopy.changes import Change
from clonebay.engine.postcopy.esp import fetch, put
from clonebay.engine.postcopy.systems import Installed, inside

LINUX_FILES = (
    "etc/fstab",
    "etc/crypttab",
    "etc/default/grub",
    "etc/initramfs-tools/conf.d/resume",
    "boot/grub/grub.cfg",
)
INITRAMFS_FILES = frozenset({"etc/crypttab", "etc/initramfs-tools/conf.d/resume"})


def replace_ids(text: str, pairs: list[tuple[str, str]]) -> str:
    """``text`` with every old id replaced by its new one (whole tokens, case kept)."""
    for old, new in pairs:
        pattern = re.compile(rf"(?<![0-9A-Za-z-]){re.escape(old)}(?![0-9A-Za-z-])", re.IGNORECASE)

        def swap(match: re.Match[str], new: str = new) -> str:
            found = match.group(0)
            return new.upper() if found.isupper() else new.lower() if found.islower() else new

        text = pattern.sub(swap, text)
    return text


def linux_files(root: Path, where: str, pairs: list[tuple[str, str]]) -> tuple[list[Change], bool]:
    """The id-naming files of a Linux root; whether one the initramfs copies changed."""
    changes, initramfs = [], False
    for rel in LINUX_FILES:
        path = root / rel
        if not (path.is_file() or path.is_symlink()):
            continue
        path = inside(root, rel)
        text = path.read_text(errors="surrogateescape")
        new = replace_ids(text, pairs)
        if new == text:
            continue
        path.write_text(new, errors="surrogateescape")
        if path.read_text(errors="surrogateescape") != new:
            raise OSError(f"{where}: /{rel} read back other text than was written")
        count = sum(text.lower().count(old.lower()) for old, _ in pairs)
        changes.append(Change(where, f"/{rel}", f"{count} old ids", "new ids", "read back"))
        initramfs |= rel in INITRAMFS_FILES
    return changes, initramfs


def esp_files(
    target: str, esp: Installed, paths: list[str], pairs: list[tuple[str, str]]
) -> list[Change]:
    """grub.cfg files on the ESP (mtools)."""
    changes = []
    with tempfile.TemporaryDirectory(prefix="clonebay-esp-") as tmp:
        for path in paths:
            if not path.lower().endswith("grub.cfg"):
                continue
            local = Path(tmp) / "grub.cfg"
            if not fetch(target, esp, path, local):
                raise OSError(f"{esp.where}: {path} could not be read")
            text = local.read_text(errors="surrogateescape")
            new = replace_ids(text, pairs)
            if new == text:
                continue
            local.write_text(new, errors="surrogateescape")
            put(target, esp, local, path)
            shown = "\\" + path.replace("/", "\\")
            changes.append(Change(esp.where, shown, "old ids", "new ids", "read back"))
    return changes
