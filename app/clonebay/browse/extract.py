"""``clonebay extract``: copy files and folders out of a mounted filesystem, keeping what the
driver reports: content, names exactly, permission bits, owner (when run as root), access and
modification times in ns, symlinks as symlinks, extended attributes (NTFS alternate data
streams arrive as ``user.*`` attributes).

Folders get their times last, after everything inside them was written (writing into a folder
changes its mtime). A file that cannot be read (a damaged frame in the image gives EIO) is
reported with its path and the copying goes on; the partial file is removed.

A caller that shows progress passes ``progress``: it is called after each file, link or folder
with that entry's path and the counts so far (``planned_bytes`` gives the total to expect), and
may raise to stop the copy between two entries (the TUI's cancel).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clonebay.browse.listing import inside
from clonebay.errors import UsageError


@dataclass
class ExtractReport:
    files: int = 0
    folders: int = 0
    links: int = 0
    bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


Progress = Callable[[str, ExtractReport], None]


def _owner(src: Path, dst: Path) -> None:
    if os.geteuid() == 0:
        info = src.lstat()
        os.chown(dst, info.st_uid, info.st_gid, follow_symlinks=False)


def _copy_file(
    src: Path, dst: Path, report: ExtractReport, rel: str, progress: Progress | None
) -> None:
    try:
        shutil.copy2(src, dst, follow_symlinks=False)
        _owner(src, dst)
        if not dst.is_symlink():
            shutil.copystat(src, dst, follow_symlinks=False)  # chown may clear set-id bits
    except OSError as exc:
        with contextlib.suppress(OSError):
            dst.unlink()
        report.failed.append((rel, exc.strerror or str(exc)))
    else:
        if dst.is_symlink():
            report.links += 1
        else:
            report.files += 1
            report.bytes += dst.stat().st_size
    if progress is not None:
        progress(rel, report)


def _copy_tree(
    src: Path, dst: Path, report: ExtractReport, rel: str, progress: Progress | None
) -> None:
    dst.mkdir(exist_ok=True)
    report.folders += 1
    try:
        children = sorted(os.scandir(src), key=lambda e: e.name)
    except OSError as exc:
        report.failed.append((rel, exc.strerror or str(exc)))
        children = []
    for child in children:
        path = Path(child.path)
        sub = f"{rel}/{child.name}" if rel else child.name
        if child.is_dir(follow_symlinks=False):
            _copy_tree(path, dst / child.name, report, sub, progress)
        else:
            _copy_file(path, dst / child.name, report, sub, progress)
    _owner(src, dst)
    shutil.copystat(src, dst, follow_symlinks=False)
    if progress is not None:
        progress(rel, report)


def extract(
    root: Path, paths: list[str], dest: Path, progress: Progress | None = None
) -> ExtractReport:
    """Copy each of ``paths`` (inside ``root``) into the folder ``dest`` under its own name;
    ``.`` or ``/`` copies the whole filesystem's content into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    report = ExtractReport()
    for path in paths:
        src = inside(root, path)
        if not src.exists() and not src.is_symlink():
            raise UsageError(f"{path}: no such file or folder in the image")
        rel = src.relative_to(root).as_posix()
        target = dest if src == root else dest / src.name
        if src.is_dir() and not src.is_symlink():
            _copy_tree(src, target, report, "" if rel == "." else rel, progress)
        else:
            _copy_file(src, target, report, rel, progress)
    return report


def planned_bytes(root: Path, paths: list[str]) -> int:
    """The bytes of the regular files ``extract`` would copy for ``paths`` (metadata only)."""
    total = 0
    for path in paths:
        src = inside(root, path)
        if src.is_file() and not src.is_symlink():
            total += src.stat().st_size
        elif src.is_dir() and not src.is_symlink():
            for folder, _, files in os.walk(src, onerror=lambda _: None):
                for name in files:
                    with contextlib.suppress(OSError):
                        info = os.lstat(os.path.join(folder, name))
                        if stat.S_ISREG(info.st_mode):
                            total += info.st_size
    return total
