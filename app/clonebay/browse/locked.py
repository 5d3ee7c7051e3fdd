"""Browsing a BitLocker or LUKS volume of an image with its key: three layers instead of one.

The partition file (the image view, fusefs.py) holds ciphertext. With a key, an ``unlocked``
view daemon (unlockfs.py) serves its plaintext as one read-only file, and the filesystem inside
is mounted from that file by its usual driver (ntfs-3g, ext4). The key is checked here first
(fs/unlock.py), so a wrong key is refused with the volume's recovery key ID before any daemon
starts; the daemon gets the keys on its standard input. Locked volumes are browsed read-only:
an edit would have to re-encrypt what it writes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from clonebay.browse import drivers
from clonebay.browse.procs import mounted_at, start_daemon, wait_for_exit
from clonebay.errors import ClonebayError
from clonebay.fs.keyring import Keyring
from clonebay.fs.probe import probe_volume
from clonebay.fs.unlock import LockedError, open_view
from clonebay.system.blockdev import FileSource
from clonebay.system.run import run

if TYPE_CHECKING:
    from clonebay.browse.mounts import FsMount


def inner_fstype(partition: Path, keys: Keyring | None) -> str:
    """The filesystem inside the locked volume in ``partition`` (LockedError: no key fits)."""
    with FileSource(str(partition)) as src:
        return probe_volume(open_view(src, keys)).fstype


def mount_locked(
    partition: Path, fs: FsMount, under: Path, keys: Keyring | None, log_path: Path
) -> None:
    """Mount the filesystem inside the locked volume in ``partition`` at ``fs.directory``,
    through an unlocked view at ``under``; ``fs`` records the view for ``unmount_locked``."""
    fstype = inner_fstype(partition, keys)
    driver = drivers.for_fstype(fstype)
    if driver is None:
        raise LockedError(f"{partition.name}: unlocked, but {fstype} inside cannot be browsed")
    assert keys is not None  # open_view refused otherwise
    under.mkdir()
    fs.under = str(under)
    fs.under_pid = start_daemon(["unlocked", str(partition), str(under)], log_path, keys.to_json())
    fs.fstype, fs.driver = fstype, driver.name
    driver.mount(under / "volume", fs, writable=False, log_path=log_path)


def unmount_locked(fs: FsMount) -> None:
    """Undo the unlocked view under ``fs`` (after its filesystem was unmounted)."""
    if not fs.under:
        return
    if mounted_at(fs.under):
        with contextlib.suppress(ClonebayError):
            run(["umount", fs.under])
    wait_for_exit([fs.under_pid] if fs.under_pid else [])
    with contextlib.suppress(OSError):
        Path(fs.under).rmdir()
    fs.under, fs.under_pid = "", 0
