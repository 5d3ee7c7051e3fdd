"""Pack files being written: frames appended to numbered packs, a new pack when one is full.

A new image (imaging/writer.py) writes packs from number 0; an edited image (imaging/revise.py)
writes its new frames to packs numbered after the image's last one and never touches the old
ones. Both write a pack the same way (docs/format.md §3): the pack header, then frames (frame
header + payload) until the next frame would pass the pack size limit, then fsync and a
``PackEntry`` (name, size, frames) for the manifest.

Frames are gathered in a page-aligned stage of STAGE bytes and written with direct I/O
(system/directio.py; on a local disk's filesystem only, see ``_block_backed``) by a thread of
its own while the next stage fills, so an image written to a local disk does not pay the page
cache's kernel time (~3 CPU-s per GiB on the VM measured in bench/) and the copy never waits for
a write it does not depend on. A stage's unaligned last bytes move to the front of the next
stage; the pack's very last bytes are written buffered at ``close``, then the pack is fsynced.
Bytes still staged are not in the file yet: ``read`` (the dedup check's byte comparison) takes
them from the stage.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from pathlib import Path

from clonebay.imaging import spec
from clonebay.imaging.codec import Buffer
from clonebay.imaging.imagedir import io_error, os_call
from clonebay.imaging.manifest import PackEntry
from clonebay.system.directio import FILE_ALIGN, DirectFile, direct_default

STAGE = 8 << 20  # bytes gathered before a write: two 4 MiB transfers' worth


class _OpenPack:
    """One pack being written: a stage filling, and at most one stage being written."""

    def __init__(self, path: Path, direct: bool, keep: int | None = None) -> None:
        """A new pack file, or with ``keep`` an existing one cut back to its first ``keep``
        bytes (a resumed save's pack, as its checkpoint left it)."""
        self.path = path
        flags = os.O_RDWR | os.O_CLOEXEC  # read: staged frames' peers
        flags |= os.O_CREAT | os.O_EXCL if keep is None else 0
        self.fd: int = os_call(path, os.open, path, flags, 0o644)
        self.io = DirectFile(str(path), self.fd, os.O_RDWR, FILE_ALIGN, direct=direct)
        self.stage, self.spare = mmap.mmap(-1, STAGE), mmap.mmap(-1, STAGE)
        self.stage_at = 0  # the pack offset of the stage's byte 0
        self.fill = 0  # bytes in the stage
        if keep is not None:  # the unaligned tail goes back into the stage, to be rewritten
            os_call(path, os.ftruncate, self.fd, keep)
            self.stage_at = keep // FILE_ALIGN * FILE_ALIGN
            self.fill = keep - self.stage_at
            self.stage[: self.fill] = os_call(path, os.pread, self.fd, self.fill, self.stage_at)
        self.flusher: threading.Thread | None = None
        self.flushing: tuple[int, int] = (0, 0)  # pack range of the stage being written
        self.error: OSError | None = None

    def add(self, parts: list[Buffer]) -> None:
        for part in parts:
            view = memoryview(part).cast("B")
            while view:
                n = min(len(view), STAGE - self.fill)
                self.stage[self.fill : self.fill + n] = view[:n]
                self.fill += n
                view = view[n:]
                if self.fill == STAGE:
                    self._hand_over()

    def _hand_over(self) -> None:
        """Write the stage's aligned part in the flusher thread; keep filling the spare."""
        self._wait()
        body = self.fill // FILE_ALIGN * FILE_ALIGN
        full, start = self.stage, self.stage_at
        self.stage, self.spare = self.spare, full
        self.stage[: self.fill - body] = full[body : self.fill]
        self.fill -= body
        self.stage_at += body
        self.flushing = (start, start + body)
        self.flusher = threading.Thread(
            target=self._write, args=(full, body, start), name="clonebay-pack", daemon=True
        )
        self.flusher.start()

    def _write(self, buf: mmap.mmap, length: int, at: int) -> None:
        try:
            self.io.write(memoryview(buf)[:length], at)
        except OSError as exc:
            self.error = exc

    def _wait(self) -> None:
        if self.flusher is not None:
            self.flusher.join()
            self.flusher = None
            self.flushing = (0, 0)
        if self.error is not None:
            raise io_error(self.path, self.error)

    def read(self, length: int, offset: int) -> bytes:
        """Bytes of the pack written so far, wherever they are now."""
        self._wait()
        end = offset + length
        head = b""
        if offset < self.stage_at:
            head = os_call(self.path, os.pread, self.fd, min(end, self.stage_at) - offset, offset)
        lo, hi = max(offset, self.stage_at) - self.stage_at, end - self.stage_at
        return head + (self.stage[lo:hi] if hi > lo else b"")

    def sync(self) -> None:
        """Make every byte added so far durable (a checkpoint); the stage keeps filling, and is
        written again in full when it is handed over."""
        self._wait()
        if self.fill:
            rest = memoryview(self.stage)[: self.fill]
            os_call(self.path, self.io.write, rest, self.stage_at)
        os_call(self.path, os.fsync, self.fd)

    def close(self) -> None:
        """Write what is staged, fsync, close (a failing close is an error too: see
        imagedir.opened)."""
        try:
            self.sync()
        except BaseException:
            self.abort()
            raise
        fd, self.fd = self.fd, -1
        self.abort()
        os_call(self.path, os.close, fd)

    def abort(self) -> None:
        """Stop: wait for the flusher, close what is open; errors on the way out are dropped
        (the caller is already failing, or closing on its own)."""
        if self.flusher is not None:
            self.flusher.join()
            self.flusher = None
        with contextlib.suppress(OSError):
            self.io.close()
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _block_backed(folder: Path) -> bool:
    """Whether ``folder`` lies on a filesystem of a block device (a real device number). FUSE
    and network filesystems (SMB, NFS, sshfs, fusefat, exfat-fuse) have an anonymous one
    (major 0): there a second, O_DIRECT descriptor of a pack is a second handle whose state the
    filesystem may keep apart from the first (fusefat lost a pack's first stage that way), and
    the page-cache tax direct I/O avoids is not where the time goes. Those get one buffered
    descriptor. (btrfs has anonymous numbers too: buffered there, slower, still correct.)"""
    try:
        return os.major(os.stat(folder).st_dev) != 0
    except OSError:
        return False


class PackAppender:
    """Frames appended to pack files numbered from ``first`` in ``image``/packs."""

    def __init__(
        self, image: Path, first: int, limit: int, image_id: bytes, *, direct: bool | None = None
    ) -> None:
        self.image, self.limit, self.image_id = image, limit, image_id
        self.first = first
        self.direct = (direct_default() and _block_backed(image)) if direct is None else direct
        self.packs: list[PackEntry] = []  # the packs closed so far, in order
        self._open: _OpenPack | None = None
        self._pos = 0
        self._frames = 0

    @property
    def current(self) -> int:
        """The number of the pack being written (or of the next one)."""
        return self.first + len(self.packs)

    def path(self, number: int) -> Path:
        return self.image / spec.PACKS_DIR / spec.pack_name(number)

    def append(self, codec: int, raw_len: int, payload: Buffer, digest: bytes) -> tuple[int, int]:
        """Write one frame; (pack number, offset of its frame header in the pack)."""
        size = spec.FRAME_HEADER.size + len(payload)
        if self._open is None or self._pos + size > self.limit:
            self._next()
        assert self._open is not None
        number, offset = self.current, self._pos
        header = spec.pack_frame_header(codec, raw_len, len(payload), digest)
        self._open.add([header, payload])
        self._pos += size
        self._frames += 1
        return number, offset

    def read(self, number: int, length: int, offset: int) -> bytes | None:
        """Bytes of the pack being written (None for another pack: read its file)."""
        if self._open is None or number != self.current:
            return None
        return self._open.read(length, offset)

    def sync(self) -> tuple[int, int, int]:
        """Make the frames appended so far durable; (pack number, its length, its frames)."""
        if self._open is None:
            return self.current, 0, 0
        self._open.sync()
        return self.current, self._pos, self._frames

    def reopen(self, packs: list[PackEntry], length: int, frames: int) -> None:
        """Go on from a checkpoint: ``packs`` closed, the next one ``length`` bytes long with
        ``frames`` frames (0: not begun); bytes written after the checkpoint are cut off."""
        self.packs = list(packs)
        if length:
            self._open = _OpenPack(self.path(self.current), self.direct, keep=length)
            self._pos, self._frames = length, frames

    def _next(self) -> None:
        self.close()
        self._open = _OpenPack(self.path(self.current), self.direct)
        self._open.add([spec.pack_pack_header(self.current, self.image_id)])
        self._pos, self._frames = spec.PACK_HEADER.size, 0

    def close(self) -> None:
        """Flush and close the pack being written, if any, and list it in ``packs``."""
        if self._open is None:
            return
        pack, self._open = self._open, None
        pack.close()
        self.packs.append(PackEntry(pack.path.name, self._pos, self._frames))

    def abort(self) -> None:
        """Close the pack being written without listing it (the caller removes the files)."""
        if self._open is not None:
            pack, self._open = self._open, None
            pack.abort()
