"""Each filesystem's own tools, run on a copy-on-write view (view.py): how small it can get,
and the resize itself.

- ext2/3/4: ``resize2fs -P`` gives the minimum in blocks; the shrink is ``e2fsck -f -n``, which
  must find nothing (a volume with errors is refused: it is for its own system to repair, and a
  copy that differs from its source without a word is not a copy), ``e2fsck -f -p`` (the check
  resize2fs insists on; it only records the check time, in the overlay), ``resize2fs FILE
  SIZEK``, then ``e2fsck -f -n`` again.
- NTFS: ``ntfsresize --info`` gives the minimum ("You might resize at N bytes"); the shrink is
  ``ntfsresize --size N``, which checks the volume first and refuses an inconsistent one.
- swap holds nothing a copy keeps: it is made anew at the new size with ``mkswap``, keeping its
  UUID and label (fstab and resume= name it by them); its minimum is ``SWAP_MINIMUM``.

Then clonebay's own prober reads the resized volume back: it must be the filesystem it was, at
its new size, and its used blocks are what the copy carries. Any failure is a refusal before the
target is touched: the shrink happens before the first write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path

from clonebay.engine.shrink.view import Base, Changes, CowView
from clonebay.errors import CommandError, DeviceError
from clonebay.fs.probe import probe_volume
from clonebay.model import Volume
from clonebay.system import loopdev
from clonebay.system.blockdev import FileSource
from clonebay.system.run import run

log = logging.getLogger(__name__)

NTFS_MINIMUM = re.compile(rb"You might resize at (\d+) bytes")
EXT_MINIMUM = re.compile(rb"minimum size of the filesystem: (\d+)")
EXT_SUPERBLOCK = 1024
SWAP_MINIMUM = 32 << 20


class ShrinkError(DeviceError):
    """A filesystem could not be measured or shrunk in its view; nothing was written."""

    title = "Cannot shrink"


def ext_block_size(path: str) -> int:
    """The block size in the ext superblock (s_log_block_size at byte 1024 + 24)."""
    with open(path, "rb") as f:
        f.seek(EXT_SUPERBLOCK + 24)
        log2: int = struct.unpack("<I", f.read(4))[0]
    if log2 > 6:
        raise ShrinkError(f"the ext superblock in {path} gives a block size of 2^{10 + log2}")
    return 1024 << log2


def minimum_size(fstype: str, path: str) -> int:
    """The least size in bytes the filesystem in ``path`` can be resized to."""
    if fstype == "swap":
        return SWAP_MINIMUM
    try:
        if fstype.startswith("ext"):
            out = run(["resize2fs", "-P", path]).stdout
            found = EXT_MINIMUM.search(out)
            if found:
                return int(found.group(1)) * ext_block_size(path)
        elif fstype == "ntfs":
            out = run(["ntfsresize", "--info", "--force", "--no-progress-bar", path]).stdout
            found = NTFS_MINIMUM.search(out)
            if found:
                return int(found.group(1))
    except CommandError as exc:
        raise ShrinkError(f"measuring {fstype}: {exc}") from exc
    raise ShrinkError(f"measuring {fstype}: no minimum size in the tool's answer")


def resize(fstype: str, path: str, new_size: int, volume: Volume | None = None) -> None:
    """Shrink the filesystem in ``path`` to ``new_size`` bytes (a multiple of 1 MiB)."""
    try:
        if fstype == "swap":
            keep = ["-U", volume.uuid] if volume and volume.uuid else []
            keep += ["-L", volume.label] if volume and volume.label else []
            run(["mkswap", *keep, path, str(new_size // 1024)])
            return
        if fstype.startswith("ext"):
            found = run(["e2fsck", "-f", "-n", path], check=False)
            if found.returncode != 0:
                said = found.stdout.decode(errors="replace").strip().splitlines()[-3:]
                raise ShrinkError(
                    f"{fstype} has errors (e2fsck -f -n exited {found.returncode}:"
                    f" {' / '.join(said)}): repair it in its own system, then clone again; it"
                    " can still be cloned onto a disk large enough"
                )
            run(["e2fsck", "-f", "-p", path])
            run(["resize2fs", path, f"{new_size // 1024}K"])
            run(["e2fsck", "-f", "-n", path])
        elif fstype == "ntfs":
            run(["ntfsresize", "--force", "--no-progress-bar", "--size", str(new_size), path])
        else:
            raise ShrinkError(f"{fstype} cannot be shrunk")
    except CommandError as exc:
        raise ShrinkError(f"shrinking {fstype} to {new_size} bytes: {exc}") from exc


def measure(base: Base, volume: Volume, scratch: Path, name: str) -> int:
    """The minimum of ``volume`` (found at ``base``) in bytes, from a read-only use of a view."""
    with CowView(base, scratch, name) as view:
        try:
            return minimum_size(volume.fstype, view.file)
        finally:
            view.discard()


def shrink(base: Base, volume: Volume, new_size: int, scratch: Path, name: str) -> Shrunk:
    """Shrink ``volume`` to ``new_size`` in a view over ``base``; what the copy needs."""
    view = CowView(base, scratch, name)
    try:
        with _block_device(view.file) as dev:
            resize(volume.fstype, dev, new_size, volume)
        with FileSource(view.file, 0, new_size) as src:
            after = probe_volume(src)
        if after.fstype != volume.fstype or after.size > new_size:
            raise ShrinkError(
                f"after the shrink the view holds {after.fstype} of {after.size} bytes, not"
                f" {volume.fstype} of at most {new_size}: not copied"
            )
        changes = view.changes()
    except BaseException:
        view.discard()
        raise
    log.info(
        "%s: %s shrunk to %d bytes; %d bytes changed in the overlay",
        name,
        volume.fstype,
        new_size,
        changes.changed_bytes,
    )
    return Shrunk(after, changes, view)


@contextlib.contextmanager
def _block_device(path: str) -> Iterator[str]:
    """A loop device over the view's file, for the resizer: the block layer's cache merges
    the small reads and writes resizers make (ntfsresize moves clusters 8 KiB at a time)
    into large FUSE requests, 2.6 times faster here; flushed and detached afterwards."""
    dev = loopdev.attach(path)
    held = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    run(["losetup", "--detach", dev], check=False)  # in use: autoclear, gone with this process
    try:
        yield dev
        run(["blockdev", "--flushbufs", dev])
    finally:
        os.close(held)  # the last close detaches it


class Shrunk:
    """A resized volume ready to copy: its used blocks, and which ranges are in the overlay."""

    def __init__(self, volume: Volume, changes: Changes, view: CowView) -> None:
        self.volume = volume
        self.changes = changes
        self.view = view

    def discard(self) -> None:
        self.view.discard()
