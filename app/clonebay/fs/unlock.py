"""The plaintext of a locked volume, for reading the files inside (browse): BitLocker or LUKS,
opened with the first secret of a Keyring that fits.

A copy never needs this (it carries ciphertext, see bitlocker_probe); browsing an image does:
the view daemon serves the plaintext as a read-only file, and ntfs-3g or the ext driver mounts
that file. ``open_view`` raises LockedError, naming the volume's protectors, when no secret
opens it.
"""

from __future__ import annotations

from clonebay.errors import InputError
from clonebay.fs.bitlocker_meta import is_bitlocker, read_metadata
from clonebay.fs.bitlocker_probe import KEY_ID, open_key
from clonebay.fs.bitlocker_view import UnlockedVolume
from clonebay.fs.keyring import Keyring
from clonebay.system.blockdev import ByteSource

LOCKED_TYPES = ("bitlocker", "luks")  # fstypes whose files are read through open_view
HEAD = 64 << 10


class LockedError(InputError):
    """A locked volume that no secret given opens (or none was given)."""

    title = "Locked volume"


def open_view(src: ByteSource, keys: Keyring | None) -> ByteSource:
    """The plaintext of the locked volume in ``src``."""
    head = src.pread(min(HEAD, src.size), 0)
    if not is_bitlocker(head):
        raise LockedError(f"{src.name}: not a BitLocker volume this version can open for reading")
    meta = read_metadata(src)
    ids = ", ".join(meta.recovery_key_ids) or "none"
    if not keys:
        raise LockedError(
            f"{src.name} is BitLocker-encrypted: give its password (--key), recovery password"
            f" (--recovery-password; recovery key ID {ids}) or startup key (--startup-key)"
        )
    key = open_key(meta, keys)
    if key is None:
        why = keys.refused.get(KEY_ID + meta.volume_guid, "no key given fits it")
        raise LockedError(f"{src.name}: BitLocker not unlocked: {why} (recovery key ID {ids})")
    return UnlockedVolume(src, meta, key)
