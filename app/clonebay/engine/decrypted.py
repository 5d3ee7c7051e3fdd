"""``--decrypt``: volumes read through their unlocked view, so the copy is plaintext.

A BitLocker volume probed with ``Keyring.decrypt`` is reported as the filesystem inside it,
marked ``decrypted`` (fs/bitlocker_probe.py): its used runs are offsets of the plaintext. The
copy reads those runs from the view (fs/unlock.py, over the source partition), not from the
disk, and writes them at the partition's place on the target: the target holds a plain NTFS
that any machine opens without a key, for a move to a machine without BitLocker. A rescue reads
the disk itself and cannot decrypt on the way: the two are refused together.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from clonebay.errors import UsageError
from clonebay.fs.keyring import Keyring
from clonebay.fs.unlock import open_view
from clonebay.model import Volume
from clonebay.system.blockdev import ByteSource, FileSource

Part = tuple[str, int, int, Volume | None]  # region name, offset on the source, size, volume


def check_rescue(volumes: Sequence[Volume | None], rescue: bool) -> None:
    """Refuse ``--decrypt`` with ``--rescue`` before anything is opened or written."""
    if rescue and any(v is not None and v.decrypted for v in volumes):
        raise UsageError(
            "--decrypt reads through the unlocked volume and --rescue reads the failing disk"
            " itself: rescue into an image first (keeping the encryption), then decrypt from it"
        )


@contextlib.contextmanager
def decrypted_views(
    source: str, parts: Sequence[Part], keys: Keyring | None
) -> Iterator[dict[str, ByteSource]]:
    """The plaintext view of each decrypted part, by region name, open for the ``with``
    (the job was planned with ``check_rescue`` first)."""
    wanted = [p for p in parts if p[3] is not None and p[3].decrypted]
    with contextlib.ExitStack() as stack:
        views: dict[str, ByteSource] = {}
        for name, offset, size, _ in wanted:
            src = stack.enter_context(FileSource(source, offset, size))
            views[name] = open_view(src, keys)
        yield views
