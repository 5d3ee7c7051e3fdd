"""``clonebay extract``: copy files and folders out of a mounted filesystem, keeping what the
driver reports: content, names exactly, permission bits, owner (when run as root), access and
modification times in ns, symlinks as symlinks, extended attributes (NTFS alternate data
streams arrive as ``user.*`` attributes).

Nothing is ever written through a symlink in DEST. Everything is made relative to an open
folder (a chain of ``O_DIRECTORY | O_NOFOLLOW`` descriptors from DEST down), files are created
with ``O_EXCL | O_NOFOLLOW``, so a symlink already in DEST, or one the image itself put there
earlier in the same extract (``a/evil`` a link to /root/.ssh, then ``b/evil`` a folder), is
met as what it is: the extract stops with SafetyError naming it. A regular file already in
DEST is replaced (unlinked first, so a hard link to a file elsewhere is not written either);
an existing folder is filled. Symlinks from the image are made as symlinks, never followed
(one replaces a symlink already there: extracting twice into the same DEST works).
Fifos, sockets and device nodes are reported, not copied.

Folders get their times last, after everything inside them was written (writing into a folder
changes its mtime). A file that cannot be read (a damaged frame in the image gives EIO) is
reported with its path and the copying goes on; the partial file is removed.

A caller that shows progress passes ``progress``: it is called after each file, link or folder
with that entry's path and the counts so far (``planned_bytes`` gives the total to expect), and
may raise to stop the copy between two entries (the TUI's cancel).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clonebay.browse.listing import inside
from clonebay.errors import SafetyError, UsageError

OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
COPY_BLOCK = 1 << 20
XATTR_SKIPPED = (errno.EPERM, errno.ENOTSUP, errno.ENODATA, errno.EINVAL)  # as shutil.copystat


@dataclass
class ExtractReport:
    files: int = 0
    folders: int = 0
    links: int = 0
    bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


Progress = Callable[[str, ExtractReport], None]


@dataclass(frozen=True)
class _Place:
    """Where an entry goes: ``name`` inside the open folder ``parent``; ``shown`` for messages."""

    parent: int
    name: str
    shown: Path

    def existing(self) -> os.stat_result | None:
        try:
            return os.stat(self.name, dir_fd=self.parent, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def refuse_link(self) -> None:
        target = os.readlink(self.name, dir_fd=self.parent)
        raise SafetyError(
            f"{self.shown} is a symlink (to {target}): extract never writes through a symlink"
            " in its destination, which could lead anywhere; remove it, or extract into an"
            " empty folder"
        )

    def clear(self, *, for_link: bool) -> None:
        """Make room for a new file or link: a file in the way goes (replaced), a folder stays
        (an error); a symlink is refused, unless a symlink replaces it (a second extract)."""
        info = self.existing()
        if info is None:
            return
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "a folder of that name is in the way")
        if stat.S_ISLNK(info.st_mode) and not for_link:
            self.refuse_link()
        os.unlink(self.name, dir_fd=self.parent)

    def open_folder(self) -> int:
        """The folder (made when missing), opened without following a symlink."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.name, 0o700, dir_fd=self.parent)
        try:
            return os.open(self.name, OPEN_FOLDER, dir_fd=self.parent)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
        info = self.existing()
        if info is not None and stat.S_ISLNK(info.st_mode):
            self.refuse_link()
        raise SafetyError(f"{self.shown} is in the way of a folder: it is not a folder")


def _copy_xattrs(src: Path, fd: int) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in XATTR_SKIPPED:
            return
        raise
    for name in names:
        try:
            os.setxattr(fd, name, os.getxattr(src, name, follow_symlinks=False))
        except OSError as exc:
            if exc.errno not in XATTR_SKIPPED:
                raise


def _set_meta(src: Path, info: os.stat_result, fd: int) -> None:
    """Attributes, owner (as root), mode (after chown, which may clear set-id bits), times."""
    _copy_xattrs(src, fd)
    if os.geteuid() == 0:
        os.fchown(fd, info.st_uid, info.st_gid)
    os.fchmod(fd, stat.S_IMODE(info.st_mode))
    os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))


def _write_file(src: Path, info: os.stat_result, place: _Place) -> int:
    """Copy a regular file's bytes and attributes; returns the bytes written."""
    place.clear(for_link=False)
    try:
        fd = os.open(place.name, NEW_FILE, 0o600, dir_fd=place.parent)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ELOOP):  # appeared meanwhile: never follow it
            info_now = place.existing()
            if info_now is not None and stat.S_ISLNK(info_now.st_mode):
                place.refuse_link()
        raise
    written = 0
    try:
        source = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            while block := os.read(source, COPY_BLOCK):
                view = memoryview(block)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    written += n
        finally:
            os.close(source)
        _set_meta(src, info, fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(place.name, dir_fd=place.parent)
        raise
    os.close(fd)
    return written


def _make_link(src: Path, info: os.stat_result, place: _Place) -> None:
    place.clear(for_link=True)
    os.symlink(os.readlink(src), place.name, dir_fd=place.parent)
    if os.geteuid() == 0:
        os.chown(place.name, info.st_uid, info.st_gid, dir_fd=place.parent, follow_symlinks=False)
    times = (info.st_atime_ns, info.st_mtime_ns)
    os.utime(place.name, ns=times, dir_fd=place.parent, follow_symlinks=False)


def _copy_entry(
    src: Path, place: _Place, report: ExtractReport, rel: str, progress: Progress | None
) -> None:
    """A file or a link (anything else is reported); an error is reported and the copy goes on,
    except a symlink met in DEST, which stops it (SafetyError)."""
    try:
        info = os.lstat(src)
        if stat.S_ISLNK(info.st_mode):
            _make_link(src, info, place)
            report.links += 1
        elif stat.S_ISREG(info.st_mode):
            report.bytes += _write_file(src, info, place)
            report.files += 1
        else:
            report.failed.append((rel, "not a file, folder or symlink: not extracted"))
    except OSError as exc:
        report.failed.append((rel, exc.strerror or str(exc)))
    if progress is not None:
        progress(rel, report)


def _fill_folder(
    src: Path, fd: int, shown: Path, report: ExtractReport, rel: str, *, progress: Progress | None
) -> None:
    """Copy the content of the folder ``src`` into the open folder ``fd``, then its attributes."""
    report.folders += 1
    try:
        children = sorted(os.scandir(src), key=lambda e: e.name)
    except OSError as exc:
        report.failed.append((rel, exc.strerror or str(exc)))
        children = []
    for child in children:
        path = Path(child.path)
        sub = f"{rel}/{child.name}" if rel else child.name
        place = _Place(fd, child.name, shown / child.name)
        if child.is_dir(follow_symlinks=False):
            _copy_folder(path, place, report, sub, progress)
        else:
            _copy_entry(path, place, report, sub, progress)
    _set_meta(src, os.lstat(src), fd)
    if progress is not None:
        progress(rel, report)


def _copy_folder(
    src: Path, place: _Place, report: ExtractReport, rel: str, progress: Progress | None
) -> None:
    fd = place.open_folder()
    try:
        _fill_folder(src, fd, place.shown, report, rel, progress=progress)
    finally:
        os.close(fd)


def extract(
    root: Path, paths: list[str], dest: Path, progress: Progress | None = None
) -> ExtractReport:
    """Copy each of ``paths`` (inside ``root``) into the folder ``dest`` under its own name;
    ``.`` or ``/`` copies the whole filesystem's content into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    report = ExtractReport()
    dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # DEST as named
    try:
        for path in paths:
            src = inside(root, path)
            if not src.exists() and not src.is_symlink():
                raise UsageError(f"{path}: no such file or folder in the image")
            rel = src.relative_to(root).as_posix()
            if src == root:
                _fill_folder(src, dest_fd, dest, report, "", progress=progress)
                continue
            place = _Place(dest_fd, src.name, dest / src.name)
            if src.is_dir() and not src.is_symlink():
                _copy_folder(src, place, report, rel, progress)
            else:
                _copy_entry(src, place, report, rel, progress)
    finally:
        os.close(dest_fd)
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
