"""A BitLocker volume as the prober reports it: locked (copied whole), or unlocked with a key the
technician gave, and then copied by the used clusters of the filesystem inside, still encrypted.

With a key, the filesystem inside is mapped through the unlocked view (bitlocker_view), and the
copy carries, at their own offsets, only ciphertext:

- the volume's first ``header_size`` bytes: BitLocker's own boot sector ("-FVE-FS-"), in clear;
- the three FVE metadata areas and the relocated, encrypted boot sectors (``kept_extents``);
- every byte the inner filesystem uses, except its first ``header_size`` bytes, which are the
  relocated area just kept.

The target is then the same encrypted volume, sector for sector where it matters: it opens with
the same protectors, and the free clusters (never read) hold whatever the target held. A copy of
ciphertext must never be edited (no hidden-sector patch, no growth: state stays ENCRYPTED).

Without a key (or when the keys given do not open it) the volume is copied whole, as before, and
the notes say which protectors and recovery key ID would open it. A volume whose Windows is
hibernated is copied whole too, with the key or not: it is both hibernated and encrypted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from clonebay.errors import InputError
from clonebay.fs import extents
from clonebay.fs.bitlocker_entries import BitlockerError
from clonebay.fs.bitlocker_keys import BitlockerKeyError, VolumeKey, unlock
from clonebay.fs.bitlocker_meta import FveMetadata, metadata_notes, probe_notes, read_metadata
from clonebay.fs.bitlocker_protectors import ProtectorKind
from clonebay.fs.bitlocker_view import UnlockedVolume
from clonebay.fs.keyring import Keyring
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import ByteSource

LOCKED_REASON = "BitLocker: the copy keeps its encryption and key protectors"
NO_KEY = (
    f"{LOCKED_REASON} (with its password, recovery password or startup key: --key,"
    " --recovery-password, --startup-key, only the used clusters are copied)"
)
KEY_ID = "bitlocker:"  # Keyring.opened's key prefix: the volume GUID follows


def locked_volume(
    src: ByteSource, reason: str = NO_KEY, notes: tuple[str, ...] | None = None
) -> Volume:
    """The volume copied whole (zero chunks skipped), with its protectors in the notes (read
    from ``src`` unless given)."""
    used = (Extent(0, src.size),) if src.size else ()
    return Volume(
        "bitlocker",
        src.size,
        used,
        CopyMethod.RAW,
        VolumeState.ENCRYPTED,
        reason=reason,
        notes=probe_notes(src) if notes is None else notes,
    )


def _has(meta: FveMetadata, *kinds: ProtectorKind) -> bool:
    return any(p.kind in kinds for p in meta.protectors)


def open_key(meta: FveMetadata, keys: Keyring) -> VolumeKey | None:
    """The full-volume key from the first secret in ``keys`` that opens this volume (or its
    clear key when protection is suspended); None, with the reason in ``keys.refused``."""
    ident = KEY_ID + meta.volume_guid
    cached = keys.opened.get(ident)
    if isinstance(cached, VolumeKey):
        return cached
    tries: list[dict[str, object]] = []
    if _has(meta, ProtectorKind.CLEAR_KEY):
        tries.append({"clear_key": True})
    if _has(meta, ProtectorKind.STARTUP_KEY):
        tries.extend({"startup_key": k} for k in keys.startup_keys)
    if _has(meta, ProtectorKind.RECOVERY_PASSWORD):
        tries.extend({"recovery_password": p} for p in keys.recovery_passwords)
    if _has(meta, ProtectorKind.PASSWORD):
        tries.extend({"password": p} for p in keys.passwords)
    refusals: list[str] = []
    for secret in tries:
        try:
            key = unlock(meta, **secret)  # type: ignore[arg-type]
        except BitlockerKeyError as exc:
            refusals.append(exc.message)
            continue
        keys.opened[ident] = key
        return key
    if tries:
        keys.refused[ident] = "; ".join(dict.fromkeys(refusals))
    elif keys:
        have = ", ".join(p.text for p in meta.protectors) or "none"
        keys.refused[ident] = f"none of the keys given is of a kind it has (its protectors: {have})"
    return None


def encrypted_runs(meta: FveMetadata, size: int, inner: tuple[Extent, ...]) -> tuple[Extent, ...]:
    """The volume's runs a copy that stays encrypted must carry, given the inner filesystem's
    used runs (offsets of the unlocked view, which are the volume's offsets past the header)."""
    head = Extent(0, min(meta.header_size, size))
    body = extents.subtract(inner, (head,))
    kept = extents.clip(meta.kept_extents, size)
    return extents.normalize((head, *kept, *body))


def probe(src: ByteSource, keys: Keyring | None, inner: Callable[[ByteSource], Volume]) -> Volume:
    """The BitLocker volume in ``src``; ``inner`` probes the unlocked view (fs.probe). A
    volume whose protection is suspended opens with its clear key, keys given or not."""
    keys = Keyring() if keys is None else keys
    try:
        meta = read_metadata(src)
        key = open_key(meta, keys)
    except InputError:  # damaged metadata: probe_notes says what
        return locked_volume(src)
    said = metadata_notes(meta)
    if key is None:
        refused = keys.refused.get(KEY_ID + meta.volume_guid, "")
        if not refused:
            return locked_volume(src, notes=said)
        return locked_volume(src, f"{LOCKED_REASON}; not unlocked: {refused}", said)
    opened = f"unlocked with its {key.protector}"
    try:
        view = UnlockedVolume(src, meta, key)
        found = inner(view)
    except BitlockerError as exc:
        return locked_volume(src, f"{LOCKED_REASON}; {opened}, but {exc.message}", said)
    notes = (*said, f"BitLocker {opened}; inside: {found.fstype} {found.label!r}")
    if keys.decrypt:
        return replace(
            found,
            decrypted=True,
            notes=notes,
            reason=f"BitLocker {opened}, written DECRYPTED (--decrypt): the copy is a plain"
            f" {found.fstype} that opens without a key; {found.reason}".rstrip("; "),
        )
    if found.copy is not CopyMethod.NATIVE:
        why = found.reason or f"{found.fstype} is copied whole"
        volume = locked_volume(src, f"{LOCKED_REASON}; {opened}; inside, {why}", notes)
        state = VolumeState.HIBERNATED if found.state is VolumeState.HIBERNATED else volume.state
        return replace(volume, state=state, label=found.label)
    runs = encrypted_runs(meta, src.size, extents.clip(found.used, src.size))
    return Volume(
        "bitlocker",
        src.size,
        runs,
        CopyMethod.NATIVE,
        VolumeState.ENCRYPTED,
        label=found.label,
        uuid=meta.volume_guid,
        block_size=found.block_size,
        reason=f"BitLocker, {opened}: the used clusters of its {found.fstype}, still encrypted,"
        " with BitLocker's metadata; never edited",
        notes=notes,
    )
