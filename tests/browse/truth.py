"""What a filesystem holds, read from the source partition with the reference tool, to compare
browsing against: the kernel's ext4 on a read-only loop device, ntfs-3g read-only, and for FAT
mtools (``mcopy -s -m`` keeps modification times), which shares no code with clonebay's FAT
driver. Each gives path -> Meta for every file, folder and symlink."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from clonebay.system.run import output, run
from clonebay.testdisks import fat, ntfs


class Meta(NamedTuple):
    kind: str  # "file", "dir", "symlink"
    content: str  # sha256 of a file, target of a symlink, "" for a folder
    mode: int
    mtime_ns: int
    uid: int
    gid: int


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def walk(root: Path) -> dict[str, Meta]:
    """Every entry under ``root`` (not root itself), by '/'-separated relative path."""
    out: dict[str, Meta] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(folder) / name
            info = full.lstat()
            if stat.S_ISLNK(info.st_mode):
                kind, content = "symlink", os.readlink(full)
            elif stat.S_ISDIR(info.st_mode):
                kind, content = "dir", ""
            else:
                kind, content = "file", sha256(full)
            rel = full.relative_to(root).as_posix()
            out[rel] = Meta(
                kind, content, stat.S_IMODE(info.st_mode), info.st_mtime_ns, info.st_uid,
                info.st_gid,
            )  # fmt: skip
    return out


@contextlib.contextmanager
def ext_mounted(partition: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="truth-ext-") as mnt:
        loop = output(["losetup", "--find", "--show", "--read-only", str(partition)]).strip()
        try:
            run(["mount", "-t", "ext4", "-o", "ro,noload", loop, mnt])
            try:
                yield Path(mnt)
            finally:
                run(["umount", mnt])
        finally:
            run(["losetup", "-d", loop])


def truth(fstype: str, partition: Path) -> dict[str, Meta]:
    """The entries of the filesystem in ``partition`` as the reference tool reads them."""
    if fstype.startswith("ext"):
        with ext_mounted(partition) as mnt:
            return walk(mnt)
    if fstype == "ntfs":
        with ntfs.mounted(partition, read_only=True) as mnt:
            return walk(mnt)
    with tempfile.TemporaryDirectory(prefix="truth-fat-") as tmp:
        if fat.listing(partition):
            fat.mtools("mcopy", partition, "-s", "-m", "-Q", "::/*", tmp + "/")
        return walk(Path(tmp))


def comparable(fstype: str, meta: Meta) -> tuple[object, ...]:
    """The part of an entry's Meta the reference can vouch for. mtools keeps only the content
    and a file's modification time (FAT has no modes or owners; mcopy does not date folders)."""
    if fstype.startswith("fat"):
        return (meta.kind, meta.content, meta.mtime_ns if meta.kind == "file" else None)
    return tuple(meta)
