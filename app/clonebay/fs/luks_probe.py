"""A LUKS volume as the prober reports it: locked (copied whole), or unlocked with a passphrase or
key file the technician gave, and then copied by the used blocks of the filesystem inside, still
encrypted.

With a key, the filesystem inside is mapped through the unlocked view (luks_view), and the copy
carries, at their own offsets, only what the volume stores:

- bytes [0, data offset): the header copies, the JSON areas and every keyslot area (LUKS2 keeps
  them in its first 16 MiB by default, LUKS1 in its first 2 MiB), so the copy opens with the same
  passphrases, key files and tokens;
- the ciphertext of every sector under a used block of the inner filesystem, at the data offset
  plus the block's offset in the view (widened to whole encryption sectors).

The free blocks are never read, and the target keeps whatever it held there: a copy of ciphertext
must never be edited (no growth, no fixups: the state stays ENCRYPTED).

Without a key, when the keys given open no slot, or when the volume is one this reader does not
open (luks_view.readable: reencryption, dm-integrity, detached header, an unsupported cipher),
it is copied whole, as before, with the header's facts and the reason in the notes. No secret
appears in a note or reason: slots are named by number, secrets as "passphrase N" or "key file N".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from clonebay.errors import LuksError, LuksKeyError
from clonebay.fs import extents
from clonebay.fs.keyring import Keyring
from clonebay.fs.luks_header import read_header
from clonebay.fs.luks_keys import VolumeKey, key_matches, unlock
from clonebay.fs.luks_meta import LuksHeader
from clonebay.fs.luks_view import UnlockedLuks, readable
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import ByteSource

LOCKED_REASON = "LUKS: the copy keeps its encryption and key slots"
KEY_ID = "luks:"  # Keyring.opened's key prefix: the LUKS UUID follows


def locked_volume(
    src: ByteSource, header: LuksHeader | None, reason: str = LOCKED_REASON
) -> Volume:
    """The volume copied whole (zero chunks skipped), with what its header says in the notes."""
    used = (Extent(0, src.size),) if src.size else ()
    notes = header.notes() if header else ()
    return Volume(
        "luks",
        src.size,
        used,
        CopyMethod.RAW,
        VolumeState.ENCRYPTED,
        label=header.label if header else "",
        uuid=header.uuid if header else "",
        reason=reason,
        notes=notes,
    )


def secrets(keys: Keyring) -> list[tuple[str, bytes]]:
    """Every secret a LUKS slot may take, named without its content: passphrases as UTF-8 (what
    cryptsetup reads from a terminal), key files as their bytes."""
    named = [(f"passphrase {i}", p.encode()) for i, p in enumerate(keys.passwords, start=1)]
    named += [(f"key file {i}", k) for i, k in enumerate(keys.key_files, start=1)]
    return named


def open_key(src: ByteSource, header: LuksHeader, keys: Keyring) -> VolumeKey | None:
    """The volume key from the first secret in ``keys`` that opens a slot; None, with the
    reason in ``keys.refused``. LuksError when no slot can be tried at all."""
    ident = KEY_ID + header.uuid
    cached = keys.opened.get(ident)
    # Checked against this header's digest: two volumes may share a UUID (a disk and its clone).
    if isinstance(cached, VolumeKey) and key_matches(header, cached.slot, cached.key):
        return cached
    refusals: list[str] = []
    for what, secret in secrets(keys):
        try:
            key = unlock(src, header, secret, what)
        except LuksKeyError as exc:
            refusals.append(exc.message.removeprefix(f"{src.name}: "))
            continue
        keys.opened[ident] = key
        return key
    if refusals:
        keys.refused[ident] = "; ".join(refusals)
    return None


def damaged_volume(src: ByteSource, error: LuksError, keys_given: bool) -> Volume:
    """A volume whose LUKS header cannot be read: whole, with what is wrong in the notes (and in
    the reason when keys were given, since the technician expected it to open)."""
    reason = f"{LOCKED_REASON}; not opened: {error.message}" if keys_given else LOCKED_REASON
    volume = locked_volume(src, None, reason)
    return replace(volume, notes=(f"LUKS header not readable: {error.message}",))


def open_or_refuse(src: ByteSource, header: LuksHeader, keys: Keyring) -> str | VolumeKey:
    """The opened volume key, or why the volume stays locked."""
    if not secrets(keys):
        return (
            "not unlocked: no passphrase or key file was given (a LUKS volume opens with those"
            " only)"
        )
    try:
        readable(header, src.size, src.name)
        key = open_key(src, header, keys)
    except LuksError as exc:
        return f"not opened: {exc.message}"
    return key or f"not unlocked: {keys.refused.get(KEY_ID + header.uuid, '')}"


def opened_volume(
    src: ByteSource, header: LuksHeader, key: VolumeKey, inner: Callable[[ByteSource], Volume]
) -> Volume:
    """The volume mapped by the used blocks of the filesystem ``inner`` finds in its plaintext."""
    opened = f"unlocked with key slot {key.slot}"
    try:
        view = UnlockedLuks(src, header, key)
        found = inner(view)
    except LuksError as exc:
        return locked_volume(src, header, f"{LOCKED_REASON}; {opened}, but {exc.message}")
    notes = (*header.notes(), f"{opened}; inside: {found.fstype} {found.label!r}")
    if found.copy is not CopyMethod.NATIVE:
        why = found.reason or f"{found.fstype} is copied whole"
        volume = locked_volume(src, header, f"{LOCKED_REASON}; {opened}; inside, {why}")
        state = VolumeState.HIBERNATED if found.state is VolumeState.HIBERNATED else volume.state
        return replace(volume, state=state, notes=notes)
    sector = view.segment.sector_size
    body = extents.align(extents.clip(found.used, view.size), sector, view.size)
    runs = (Extent(0, view.segment.offset), *extents.shift(body, view.segment.offset))
    return Volume(
        "luks",
        src.size,
        extents.clip(extents.normalize(runs), src.size),
        CopyMethod.NATIVE,
        VolumeState.ENCRYPTED,
        label=found.label or header.label,
        uuid=header.uuid,
        block_size=found.block_size,
        reason=f"LUKS{header.version}, {opened}: the used blocks of its {found.fstype}, still"
        " encrypted, with the LUKS header and key slots; never edited",
        notes=notes,
    )


def probe(src: ByteSource, keys: Keyring | None, inner: Callable[[ByteSource], Volume]) -> Volume:
    """The LUKS volume in ``src``; ``inner`` probes the unlocked view (fs.probe)."""
    try:
        header = read_header(src)
    except LuksError as exc:
        return damaged_volume(src, exc, bool(keys))
    if not keys:
        return locked_volume(src, header)
    key = open_or_refuse(src, header, keys)
    if isinstance(key, str):
        return locked_volume(src, header, f"{LOCKED_REASON}; {key}")
    return opened_volume(src, header, key, inner)
