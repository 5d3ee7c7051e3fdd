"""Copy-on-write over an image's regions: what ``clonebay edit`` writes, kept beside the image.

An image is never written while it is edited. The first write into a chunk (the image's
``chunk_size`` grid, 4 MiB by default) copies that chunk's current bytes from the image into a
sparse scratch file per region (``REGION.chunks``, at the same offset) and notes the chunk in
an append-only journal (``dirty.log``); that write and every later read or write of the chunk
use the scratch file. Reads of clean chunks go to the image through ``read_at``.

Every write into the scratch area is whole or an error. A chunk's copy-up is written in full
and fsynced before the journal names it, and only then is the chunk read from the scratch file;
so the journal never names a chunk whose scratch copy is a hole. A journal line carries its own
checksum and ends in a newline (``p5 12 1b2c3d4e``): a line cut short by a crash is not
mistaken for another chunk (``p5 1``), it is dropped, and any other damage refuses the commit.

When a write fails (the scratch filesystem is full, which on the live system means /run, RAM;
or the image cannot be read for the copy-up), that write and every later one gets the error,
and the failure is written into ``edit.status``. That file is allocated in full when the edit
begins, so recording the failure needs no free space. A filesystem driver above the view may
have reported success to a program long before its writeback failed, so an edit with a failed
write is never committed: ``commit`` refuses it and the image stays as it was.

``clonebay umount --commit`` hands the dirty chunks to imaging/revise.py, which appends them to
the image as new frames and a new index revision; ``clonebay umount`` without it deletes the
scratch folder, and the image is byte for byte what it was. The journal is fsynced whenever
the filesystem driver asks for a flush, so a commit after a crash of the view still knows every
chunk that was written. ``base.json`` records the manifest's checksum at the start of the edit:
a commit onto an image that changed meanwhile is refused.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import xxhash

from clonebay.errors import DeviceError, SafetyError
from clonebay.imaging import spec
from clonebay.imaging.manifest import Manifest
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.revise import ImageReviser
from clonebay.units import human_size

log = logging.getLogger(__name__)

JOURNAL = "dirty.log"
BASE = "base.json"
STATUS = "edit.status"
STATUS_SIZE = 4096  # one page: allocated up front, rewritten in place
STATUS_OK = b"ok"
STATUS_FAILED = b"failed: "


class EditFailedError(DeviceError):
    """An edit lost writes (its scratch area filled up or could not be written) or its journal
    is damaged: it cannot be committed, and the image stays as it was. Free space where the
    scratch area lives (on the live system /run is RAM) and make the edit again."""

    title = "Edit not committed"


def manifest_digest(image: Path) -> str:
    """xxh3-128 of manifest.json as it is on disk: which revision of the image an edit began on."""
    return xxhash.xxh3_128_hexdigest((image / spec.MANIFEST_NAME).read_bytes())


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """``pwrite`` until every byte of ``data`` is written at ``offset``, or raise (a write that
    writes nothing is reported as ENOSPC, which is what a full filesystem means by it)."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        written = os.pwrite(fd, view[done:], offset + done)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += written


def _append_all(fd: int, data: bytes) -> None:
    """``write`` to an O_APPEND file until all of ``data`` is written, or raise."""
    done = 0
    while done < len(data):
        written = os.write(fd, data[done:])
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += written


class Overlay:
    """Reads and writes of regions, copy-on-write in ``scratch`` over ``reader``'s image."""

    def __init__(self, reader: ImageReader, scratch: Path) -> None:
        self.reader = reader
        self.scratch = scratch
        self.chunk = reader.manifest.chunk_size
        self.dirty: dict[str, set[int]] = {r.name: set() for r in reader.regions}
        self.failure = ""  # the first failed write: every later write fails too
        self._failure_errno = errno.EIO
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        scratch.mkdir(parents=True, exist_ok=True)
        base = scratch / BASE
        if base.exists():
            self._check_base(json.loads(base.read_text()))
        else:
            base.write_text(json.dumps({"manifest_xxh3": manifest_digest(reader.path)}))
        entries, complete = _read_journal(scratch / JOURNAL)
        self._status = _open_status(scratch / STATUS)
        for region, index in entries:
            self.dirty.setdefault(region, set()).add(index)
        self._journal = os.open(
            scratch / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        os.truncate(self._journal, complete)  # a torn last line must not prefix the next one

    def _check_base(self, base: dict[str, str]) -> None:
        if base.get("manifest_xxh3") != manifest_digest(self.reader.path):
            raise SafetyError(
                f"{self.reader.path} changed since this edit began (another edit was committed);"
                f" the changes in {self.scratch} no longer apply: unmount without --commit"
            )

    def _fd(self, region: str) -> int:
        fd = self._fds.get(region)
        if fd is None:
            path = self.scratch / f"{region}.chunks"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fds[region] = fd
        return fd

    def _pieces(self, region: str, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        """(chunk index, offset, length) of each chunk-grid piece of a range inside the region."""
        end = min(offset + length, self.reader.region(region).size)
        pos = offset
        while pos < end:
            index = pos // self.chunk
            stop = min(end, (index + 1) * self.chunk)
            yield index, pos, stop - pos
            pos = stop

    def read(self, region: str, offset: int, length: int) -> bytes:
        """The region's current bytes (fewer at its end, like pread)."""
        parts = []
        for index, pos, size in self._pieces(region, offset, length):
            if index in self.dirty[region]:
                parts.append(os.pread(self._fd(region), size, pos))
            else:
                parts.append(self.reader.read_at(region, pos, size))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write(self, region: str, offset: int, data: bytes) -> int:
        """Write all of ``data`` at ``offset`` or raise OSError; a chunk is copied up from the
        image on its first write. After one failed write every write fails (the edit is lost)."""
        size = self.reader.region(region).size
        if offset + len(data) > size:
            raise OSError(errno.ENOSPC, f"write past the end of region {region} ({size} bytes)")
        view = memoryview(data)
        with self._lock:
            if self.failure:
                raise OSError(self._failure_errno, f"the edit already failed: {self.failure}")
            try:
                for index, pos, part in self._pieces(region, offset, len(data)):
                    fd = self._fd(region)
                    if index not in self.dirty[region]:
                        self._copy_up(region, index, fd, size)
                    write_all(fd, view[pos - offset : pos - offset + part], pos)
            except (OSError, spec.ImageError) as exc:
                self._fail(f"write to {region} at {offset} (+{len(data)} bytes): {exc}", exc)
                if isinstance(exc, OSError):
                    raise
                raise OSError(errno.EIO, str(exc)) from exc
        return len(data)

    def _copy_up(self, region: str, index: int, fd: int, size: int) -> None:
        """The chunk's image bytes into the scratch file, durable, then named in the journal;
        only then is the chunk read from the scratch file."""
        start = index * self.chunk
        write_all(fd, self.reader.read_at(region, start, min(self.chunk, size - start)), start)
        os.fsync(fd)
        _append_all(self._journal, journal_line(region, index))
        self.dirty[region].add(index)

    def _fail(self, why: str, exc: BaseException) -> None:
        """Remember the first failure, here and in the status file (allocated: no space needed)."""
        self.failure = why
        if isinstance(exc, OSError) and exc.errno:
            self._failure_errno = exc.errno
        log.error("%s; the edit in %s cannot be committed any more", why, self.scratch)
        text = (STATUS_FAILED + why.encode(errors="replace"))[: STATUS_SIZE - 1] + b"\n"
        try:
            write_all(self._status, text.ljust(STATUS_SIZE, b" "), 0)
            os.fsync(self._status)
        except OSError as status_exc:
            log.error("%s: the failure could not be recorded: %s", self.scratch, status_exc)

    def flush(self) -> None:
        """Make every write so far durable in the scratch folder (journal last)."""
        with self._lock:
            try:
                for fd in self._fds.values():
                    os.fsync(fd)
                os.fsync(self._journal)
            except OSError as exc:  # written bytes may be lost: as a failed write
                self._fail(f"flushing the scratch area: {exc}", exc)
                raise

    def dirty_ranges(self, region: str) -> list[tuple[int, int]]:
        size = self.reader.region(region).size
        return [
            (i * self.chunk, min((i + 1) * self.chunk, size)) for i in sorted(self.dirty[region])
        ]

    def close(self) -> None:
        with self._lock:
            for fd in [*self._fds.values(), self._journal, self._status]:
                os.close(fd)
            self._fds.clear()


# -- the status file and the journal -----------------------------------------------------------


def _open_status(path: Path) -> int:
    """The status file, created ``ok`` and allocated in full when the edit begins."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_size < STATUS_SIZE:
            os.posix_fallocate(fd, 0, STATUS_SIZE)
            write_all(fd, (STATUS_OK + b"\n").ljust(STATUS_SIZE, b" "), 0)
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def edit_failure(scratch: Path) -> str:
    """Why a write of the edit in ``scratch`` failed ("" when none did)."""
    try:
        text = (scratch / STATUS).read_bytes()
    except FileNotFoundError:
        return ""
    if text.startswith(STATUS_FAILED):
        return text[len(STATUS_FAILED) :].decode(errors="replace").strip()
    return ""


def journal_line(region: str, index: int) -> bytes:
    """``REGION INDEX CHECK\\n``: CHECK is the xxh32 of ``REGION INDEX`` in hex."""
    entry = f"{region} {index}"
    return f"{entry} {xxhash.xxh32_hexdigest(entry.encode())}\n".encode()


def _parse_line(line: bytes) -> tuple[str, int] | None:
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    try:
        region = parts[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    index = int(parts[1])
    if not region or journal_line(region, index) != line + b"\n":
        return None
    return region, index


def _read_journal(path: Path) -> tuple[list[tuple[str, int]], int]:
    """The chunks the journal names, and the length of its complete lines. A last line with no
    newline was cut short by a crash while it was appended: the chunk's write never returned, so
    it is dropped. A complete line that does not check is damage: the edit cannot be trusted."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    complete = data.rfind(b"\n") + 1
    entries = []
    for number, line in enumerate(data[:complete].split(b"\n")[:-1], 1):
        entry = _parse_line(line)
        if entry is None:
            raise EditFailedError(
                f"the edit's journal {path} is damaged at line {number} ({line[:40]!r}):"
                " which chunks were written is not known, so the edit cannot be committed;"
                " unmount without --commit to discard it"
            )
        entries.append(entry)
    return entries, complete


def changed_chunks(scratch: Path) -> int:
    """How many chunks an edit wrote (0: nothing to commit), for messages: lines that do not
    check are not counted here (a commit refuses them)."""
    try:
        data = (scratch / JOURNAL).read_bytes()
    except FileNotFoundError:
        return 0
    lines = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
    return len({entry for entry in map(_parse_line, lines) if entry is not None})


def refuse_failed(image: Path, scratch: Path) -> None:
    """Raise EditFailedError when a write of the edit in ``scratch`` failed."""
    why = edit_failure(scratch)
    if not why:
        return
    try:
        free = f"{human_size(shutil.disk_usage(scratch).free)} free now"
    except OSError:
        free = "its free space unknown"
    raise EditFailedError(
        f"the edit of {image} lost writes, so it cannot be committed: {why}."
        f" Its scratch area {scratch} ({free}) ran out of space or could not be written."
        f" Nothing was committed and {image} is unchanged; free space there (on the live"
        " system /run is RAM) and make the edit again"
    )


def commit(image: Path, scratch: Path, note: str = "") -> Manifest | None:
    """Append the edit in ``scratch`` to ``image`` as its next revision (None: nothing changed).
    An edit with a failed write is refused (EditFailedError) and the image is not touched."""
    refuse_failed(image, scratch)
    with ImageReader(image) as reader:
        overlay = Overlay(reader, scratch)
        try:
            reviser = ImageReviser(image)
            for region in reader.regions:
                ranges = overlay.dirty_ranges(region.name)
                if ranges:
                    reviser.replace(
                        region.name, ranges, functools.partial(overlay.read, region.name)
                    )
            return reviser.commit(note)
        finally:
            overlay.close()
