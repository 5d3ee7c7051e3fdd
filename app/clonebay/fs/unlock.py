"""The plaintext of a locked volume, for reading the files inside (browse): BitLocker or LUKS,
opened with the first secret of a Keyring that fits.

A copy never needs this (it carries ciphertext, see bitlocker_probe); browsing an image does:
the view daemon serves the plaintext as a read-only file, and ntfs-3g or the ext driver mounts
that file. ``open_view`` raises LockedError, naming the volume's protectors, when no secret
opens it.
"""

from __future__ import annotations

from clonebay.errors import InputError
from clonebay.fs import luks_probe
from clonebay.fs.bitlocker_meta import is_bitlocker, read_metadata
from clonebay.fs.bitlocker_probe import KEY_ID, open_key
from clonebay.fs.bitlocker_view import UnlockedVolume
from clonebay.fs.keyring import Keyring
from clonebay.fs.luks_header import is_luks, read_header
from clonebay.fs.luks_view import UnlockedLuks
from clonebay.system.blockdev import ByteSource

LOCKED_TYPES = ("bitlocker", "luks")  # fstypes whose files are read through open_view
HEAD = 64 << 10


class LockedError(InputError):
    """A locked volume that no secret given opens (or none was given)."""

    title = "Locked volume"


def open_view(src: ByteSource, keys: Keyring | None) -> ByteSource:
    """The plaintext of the locked volume in ``src``."""
    head = src.pread(min(HEAD, src.size), 0)
    if is_luks(head):
        return _open_luks(src, keys)
    if not is_bitlocker(head):
        raise LockedError(f"{src.name}: neither BitLocker nor LUKS: nothing to unlock")
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


def _open_luks(src: ByteSource, keys: Keyring | None) -> ByteSource:
    header = read_header(src)
    if not keys:
        raise LockedError(
            f"{src.name} is LUKS{header.version}-encrypted (UUID {header.uuid}): give its"
            " passphrase (--key) or key file (--key-file)"
        )
    key = luks_probe.open_or_refuse(src, header, keys)
    if isinstance(key, str):
        raise LockedError(f"{src.name}: LUKS {key}")
    return UnlockedLuks(src, header, key)
