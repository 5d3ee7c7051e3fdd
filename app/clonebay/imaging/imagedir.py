"""File operations of an image directory: durable writes, and making a directory ready for a
new image without clobbering anything that is not an image (docs/format.md §8).

Every OSError becomes a DeviceError naming the file, so a full disk or a pulled USB stick gives
a message a technician can act on; a full store (ENOSPC, a quota's EDQUOT, or EFBIG: FAT32's
4 GiB file limit) becomes a StoreFullError, which the save turns into "the store is full".
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clonebay.errors import ClonebayError, DeviceError, SafetyError, StoreFullError, UsageError
from clonebay.imaging import spec
from clonebay.imaging.codec import Buffer

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def io_error(path: object, exc: OSError) -> ClonebayError:
    """The error to raise for ``exc`` on the image file ``path``."""
    if exc.errno in FULL:
        what = {errno.EDQUOT: "quota exceeded", errno.EFBIG: "file too large for the filesystem"}
        return StoreFullError(f"{path}: {what.get(exc.errno or 0, 'no space left')}")
    return DeviceError(f"{path}: {exc.strerror or exc}")


def os_call(path: Path, func: Any, *args: Any) -> Any:
    """Run one os call; an OSError becomes a DeviceError naming the image file."""
    try:
        return func(*args)
    except OSError as exc:
        raise io_error(path, exc) from exc


def write_all(fd: int, parts: list[Buffer], path: Path) -> None:
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        written: int = os_call(path, os.writev, fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


@contextlib.contextmanager
def opened(path: Path, flags: int, mode: int = 0o644) -> Iterator[int]:
    """``path`` opened with ``flags``, closed after the block. A failing close is an error like
    any other (network filesystems and sshfs report lost writes, or a dead connection, there),
    except after the block failed: then the first error is the one to tell."""
    fd: int = os_call(path, os.open, path, flags, mode)
    try:
        yield fd
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    os_call(path, os.close, fd)


def write_new_file(path: Path, parts: list[Buffer], *, exclusive: bool = True) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else os.O_TRUNC)
    with opened(path, flags) as fd:
        write_all(fd, parts, path)
        os_call(path, os.fsync, fd)


def fsync_dir(path: Path) -> None:
    with opened(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) as fd:
        os_call(path, os.fsync, fd)


def image_files(path: Path) -> Iterator[Path]:
    """Files an image directory may hold; ValueError names the first file that is not ours."""
    for entry in sorted(path.iterdir()):
        if entry.name in (spec.MANIFEST_NAME, spec.MANIFEST_NAME + ".tmp") and entry.is_file():
            yield entry
        elif entry.name == spec.RESUME_DIR and entry.is_dir():
            yield from (child for child in sorted(entry.iterdir()) if child.is_file())
        elif entry.name in (spec.PACKS_DIR, spec.INDEX_DIR) and entry.is_dir():
            suffix = ".pack" if entry.name == spec.PACKS_DIR else ".idx"
            for child in sorted(entry.iterdir()):
                if not (child.is_file() and child.name.endswith(suffix)):
                    raise ValueError(str(child))
                yield child
        else:
            raise ValueError(str(entry))


def prepare_directory(path: Path, overwrite: bool) -> None:
    """Make ``path`` an empty image directory; refuse to clobber anything but an old image."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} exists and is not a directory; an image is a directory")
    if path.exists() and any(path.iterdir()):
        try:
            files = list(image_files(path))
        except ValueError as exc:
            raise SafetyError(
                f"{path} holds files that are not part of a clonebay image ({exc});"
                " choose a new or empty directory"
            ) from None
        if not overwrite:
            state = "an image" if (path / spec.MANIFEST_NAME).exists() else "an incomplete image"
            raise SafetyError(f"{path} already holds {state}; pass overwrite to replace it")
        # The manifest goes first (and durably): an interrupted overwrite leaves an incomplete
        # image, never an old manifest pointing at half-deleted packs.
        files.sort(key=lambda p: p.name != spec.MANIFEST_NAME)
        for i, file in enumerate(files):
            os_call(file, file.unlink)
            if i == 0:
                fsync_dir(path)
    for sub in ("", spec.PACKS_DIR, spec.INDEX_DIR):
        os_call(path / sub, (path / sub).mkdir, 0o755, False, True)


def remove_incomplete(path: Path) -> bool:
    """Delete an image directory that has no manifest (a failed save's), its own files only;
    False (nothing removed) when it holds a manifest or anything that is not an image's."""
    if (path / spec.MANIFEST_NAME).exists():
        return False
    try:
        files = list(image_files(path))
        for file in files:
            file.unlink()
        for sub in (spec.PACKS_DIR, spec.INDEX_DIR, spec.RESUME_DIR, ""):
            if sub != spec.RESUME_DIR or (path / sub).is_dir():
                (path / sub).rmdir()
    except (OSError, ValueError):
        return False
    return True
