"""What ``clonebay ls`` shows: the entries under a path of a mounted filesystem, as the driver
reports them (names byte for byte, permission bits, owner, size, modification time in ns,
symlink targets), and the path rules that keep a request inside the filesystem."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clonebay.errors import UsageError


@dataclass(frozen=True)
class Entry:
    """One file, folder or link; ``path`` is relative to the filesystem's root, '/'-separated."""

    path: str
    kind: str  # "file", "dir", "symlink", "other"
    mode: int  # permission bits (stat.S_IMODE)
    size: int
    mtime_ns: int
    uid: int
    gid: int
    nlink: int
    target: str = ""  # of a symlink

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """An ``ls -l``-like line: type and mode, owner, size, local time, path (-> target)."""
        kind = {"dir": "d", "symlink": "l", "file": "-"}.get(self.kind, "?")
        mode = stat.filemode(self.mode)[1:]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.mtime_ns / 1e9))
        text = f"{kind}{mode} {self.uid:>5} {self.gid:>5} {self.size:>12} {when} {self.path}"
        return text + (f" -> {self.target}" if self.target else "")


def inside(root: Path, path: str) -> Path:
    """``root / path``, refusing a path that climbs out of the root ('..')."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"{path}: '..' is not allowed in a path inside an image")
    return root.joinpath(*parts)


def entry(root: Path, full: Path) -> Entry:
    info = full.lstat()
    if stat.S_ISDIR(info.st_mode):
        kind = "dir"
    elif stat.S_ISLNK(info.st_mode):
        kind = "symlink"
    elif stat.S_ISREG(info.st_mode):
        kind = "file"
    else:
        kind = "other"
    return Entry(
        path=full.relative_to(root).as_posix() if full != root else ".",
        kind=kind,
        mode=stat.S_IMODE(info.st_mode),
        size=info.st_size,
        mtime_ns=info.st_mtime_ns,
        uid=info.st_uid,
        gid=info.st_gid,
        nlink=info.st_nlink,
        target=os.readlink(full) if kind == "symlink" else "",
    )


def list_path(root: Path, path: str = "", *, recursive: bool = False) -> list[Entry]:
    """The entries under ``path`` (its own entry if it is not a folder), sorted by path."""
    top = inside(root, path)
    if not top.is_dir() or top.is_symlink():
        if not top.exists() and not top.is_symlink():
            raise UsageError(f"{path}: no such file or folder in the image")
        return [entry(root, top)]
    return sorted((entry(root, p) for p in _walk(top, recursive)), key=lambda e: e.path)


def _walk(top: Path, recursive: bool) -> Iterator[Path]:
    with os.scandir(top) as found:
        for item in found:
            yield Path(item.path)
            if recursive and item.is_dir(follow_symlinks=False):
                yield from _walk(Path(item.path), recursive)
