"""The FUSE side of an unlocked volume: one read-only file, ``/volume``, the plaintext of a
BitLocker or LUKS partition file (fs/unlock.py), for ntfs-3g or the ext driver to mount.

The keys come on the view daemon's standard input (procs.start_daemon), never its command line;
the opened key lives only in this process's memory, until the volume is unmounted.
"""

from __future__ import annotations

import errno
import logging

import mfusepy

from clonebay.browse.onefile import OneFileFS
from clonebay.fs.keyring import Keyring
from clonebay.fs.unlock import open_view
from clonebay.system.blockdev import ByteSource, FileSource

log = logging.getLogger(__name__)


class UnlockedFS(OneFileFS):
    """mfusepy operations: ``/volume``, read-only, the plaintext ``view``."""

    mode = 0o400

    def __init__(self, view: ByteSource, source: FileSource) -> None:
        super().__init__()
        self.view = view
        self.source = source

    @property
    def file_size(self) -> int:
        return self.view.size

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        size = max(0, min(size, self.view.size - offset))
        try:
            return self.view.pread(size, offset)
        except OSError as exc:
            log.error("read at %d (+%d): %s", offset, size, exc)
            raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None

    def destroy(self, path: str) -> None:
        self.source.close()


def unlocked_operations(partition: str, secrets: bytes) -> UnlockedFS:
    """The operations serving ``partition``'s plaintext, opened with ``secrets`` (Keyring JSON)."""
    source = FileSource(partition)
    return UnlockedFS(open_view(source, Keyring.from_json(secrets)), source)
