"""What a BitLocker volume says about itself before it is unlocked: its FVE metadata.

A BitLocker volume (Windows 7 and later; BitLocker To Go on removable drives) starts with a boot
sector whose OEM id is "-FVE-FS-" (To Go: a FAT32 boot sector, "MSWIN4.1", so that old Windows
sees a small readable FAT volume). At a fixed place in that sector (offset 160; To Go: 424) lie a
GUID saying what kind of BitLocker it is and the offsets of three identical copies of the FVE
metadata block. Each copy is a 64 KiB area holding: a block header (encrypted size, where the
volume's real first sectors were moved, the three copies' offsets), a metadata header (volume
GUID, encryption method, creation time), a list of entries (see bitlocker_entries: the key
protectors, the sealed full-volume key, the description, the relocated boot-sector area) and,
after the block, a validation record with a CRC-32 of the block (and, sealed with the volume
master key, its SHA-256, checked once a key opens the volume). A copy whose header, CRC or
placement is wrong is skipped, and the next one is used.

The encrypted volume as a whole: every sector is encrypted with the full-volume key (FVEK) at its
own position, except that the first sectors (8 KiB on NTFS: the boot sector and its neighbours)
are stored encrypted in the relocated boot-sector area, and the three metadata areas and the
relocated area itself read as zeros once unlocked. A later copy that wants to stay a BitLocker
volume must keep ``kept_extents`` byte for byte.

The "recovery key ID" a technician matches against the 48-digit recovery password printed or
kept in a Microsoft account is the recovery-password protector's GUID.

Spec: libbde's "BitLocker Drive Encryption (BDE) format" (J. Metz), sections "Volume header",
"FVE metadata block" and "FVE Volume Master Key"; cryptsetup's lib/bitlk/bitlk.c (the validation
record, the To Go and "encrypt-on-write" GUIDs); dislocker's metadata.priv.h (the state values).
Windows Vista's BitLocker (metadata version 1, boot code EB 52 90) is refused, as cryptsetup does.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from datetime import datetime

from clonebay.errors import InputError
from clonebay.fs.bitlocker_entries import (
    BitlockerError,
    Entry,
    EntryType,
    Method,
    Sealed,
    ValueType,
    filetime,
    guid_text,
    iter_entries,
    need,
    sealed,
    utf16,
)
from clonebay.fs.bitlocker_protectors import Protector, parse_protector
from clonebay.model import Extent
from clonebay.system.blockdev import ByteSource

SIGNATURE = b"-FVE-FS-"
TOGO_SIGNATURE = b"MSWIN4.1"  # BitLocker To Go's FAT32 OEM id, recognised by the GUID below
BOOT_CODE = b"\xeb\x58\x90"
VISTA_BOOT_CODE = b"\xeb\x52\x90"
LOCATOR_OFFSET = 160
TOGO_LOCATOR_OFFSET = 424
LOCATOR = struct.Struct("<16s3Q")  # BitLocker GUID, the three FVE metadata block offsets
EOW_OFFSETS = struct.Struct("<2Q")  # after the locator: the "encrypt-on-write" blocks (not To Go)
# The GUIDs of the locator, as stored (little-endian fields).
GUID_NORMAL = "4967D63B-2E29-4AD8-8399-F6A339E3D001"
GUID_EOW = "92A84D3B-DD80-4D0E-9E4E-B1E3284EAED8"  # "used space only" while it encrypts on write

AREA = 64 << 10  # each metadata copy owns 64 KiB, whatever the sector size (cryptsetup, dislocker)
# Block header: signature, size in 16-byte units, version (2), current and next state, encrypted
# size, conversion size, volume header sectors, the three copies' offsets, volume header offset.
BLOCK_HEADER = struct.Struct("<8sHHHHQIIQQQQ")
# Metadata header: size (itself included), version (1), header size (48), size again, volume
# GUID, next nonce counter, encryption method (u16, then an unknown u16), creation FILETIME.
METADATA_HEADER = struct.Struct("<IIII16sIHHQ")
HEADERS = BLOCK_HEADER.size + METADATA_HEADER.size
VALIDATION = struct.Struct("<HHI")  # size, version, CRC-32 of the block; then a sealed SHA-256
STATE_ENCRYPTED = 4  # dislocker's METADATA_STATE_ENCRYPTED; 2 and 5: a conversion under way


@dataclass(frozen=True)
class FveMetadata:
    """One BitLocker volume's header and chosen FVE metadata copy, as data.

    ``sealed_fvek`` and ``validation`` are the sealed keys the unlocking code opens; they are not
    keys in clear and are never printed. ``damaged`` says why copies before ``copy`` were skipped.
    """

    togo: bool
    encrypt_on_write: bool
    sector_size: int
    volume_guid: str
    method: Method
    created: datetime | None
    description: str
    state: int
    next_state: int
    encrypted_size: int
    header_offset: int  # where the volume's first ``header_size`` bytes are stored, encrypted
    header_size: int
    block_offsets: tuple[int, int, int]
    eow_offsets: tuple[int, ...]
    protectors: tuple[Protector, ...]
    copy: int  # 0, 1 or 2: the copy read
    damaged: tuple[str, ...]
    sealed_fvek: Sealed = field(repr=False)
    validation: Sealed | None = field(repr=False)
    block_sha256: bytes = field(repr=False)

    @property
    def recovery_key_ids(self) -> tuple[str, ...]:
        """The recovery-password protectors' GUIDs: the "recovery key ID" Windows shows."""
        return tuple(p.guid for p in self.protectors if p.kind.is_recovery)

    @property
    def kept_extents(self) -> tuple[Extent, ...]:
        """What a copy that stays BitLocker must keep: the metadata areas and the relocated
        boot sectors (both read as zeros through the unlocked view)."""
        areas = [Extent(offset, AREA) for offset in self.block_offsets]
        areas.append(Extent(self.header_offset, self.header_size))
        return tuple(sorted(areas))


def is_bitlocker(head: bytes) -> bool:
    """A BitLocker boot sector: "-FVE-FS-" at offset 3, or To Go's FAT32 sector with a
    BitLocker GUID at offset 424 (a plain FAT32 volume has boot code there)."""
    if head[3:11] == SIGNATURE:
        return True
    end = TOGO_LOCATOR_OFFSET + 16
    return (
        head[3:11] == TOGO_SIGNATURE
        and len(head) >= end
        and guid_text(head[TOGO_LOCATOR_OFFSET:end]) in (GUID_NORMAL, GUID_EOW)
    )


@dataclass(frozen=True)
class _Head:
    """What the boot sector says: To Go or not, sector size, kind GUID, where the copies are."""

    togo: bool
    sector_size: int
    guid: str
    offsets: tuple[int, int, int]
    eow_offsets: tuple[int, ...]


def _boot_sector(src: ByteSource) -> _Head:
    if src.size < 512:
        raise BitlockerError(f"{src.name}: {src.size} bytes, too small for a BitLocker volume")
    head = src.pread(512, 0)
    if not is_bitlocker(head):
        raise BitlockerError(f"{src.name}: no BitLocker signature at offset 3")
    if head[0:3] == VISTA_BOOT_CODE:
        raise BitlockerError(
            f"{src.name}: BitLocker from Windows Vista (metadata version 1) is not supported"
        )
    if head[0:3] != BOOT_CODE:
        raise BitlockerError(f"{src.name}: unknown boot code {head[0:3].hex()} at offset 0")
    togo = head[3:11] == TOGO_SIGNATURE
    sector_size = struct.unpack_from("<H", head, 11)[0] or 512
    if sector_size not in (512, 4096):
        raise BitlockerError(f"{src.name}: sector size {sector_size} at offset 11")
    at = TOGO_LOCATOR_OFFSET if togo else LOCATOR_OFFSET
    kind, first, second, third = LOCATOR.unpack_from(head, at)
    guid = guid_text(kind)
    if guid not in (GUID_NORMAL, GUID_EOW):
        raise BitlockerError(f"{src.name}: unknown BitLocker GUID {guid} at offset {at}")
    eow = () if togo else EOW_OFFSETS.unpack_from(head, at + LOCATOR.size)
    return _Head(togo, sector_size, guid, (first, second, third), tuple(o for o in eow if o))


def _block(src: ByteSource, index: int, offset: int) -> bytes:
    """Copy ``index`` of the metadata block, whole and checked; BitlockerError says why not."""
    where = f"{src.name}: FVE metadata copy {index + 1} at offset {offset}"
    if offset % 512 or offset + HEADERS > src.size or offset < 512:
        raise BitlockerError(f"{where} lies outside the volume ({src.size} bytes)")
    area = src.pread(min(AREA, src.size - offset), offset)
    header = BLOCK_HEADER.unpack_from(area)
    sig, units, version, own_offset = header[0], header[1], header[2], header[8 + index]
    if sig != SIGNATURE:
        raise BitlockerError(f"{where}: no -FVE-FS- signature")
    if version != 2:
        raise BitlockerError(f"{where}: block version {version} (only 2 is read)")
    size = units << 4
    if not HEADERS <= size <= len(area) - VALIDATION.size:
        raise BitlockerError(f"{where}: block size {size} does not fit its 64 KiB area")
    check_size, check_version, crc = VALIDATION.unpack_from(area, size)
    if check_size < VALIDATION.size or check_version > 2:
        raise BitlockerError(f"{where}: no validation record after the block (offset {size})")
    if zlib.crc32(area[:size]) != crc:
        raise BitlockerError(f"{where}: CRC-32 mismatch (damaged)")
    if own_offset != offset:
        raise BitlockerError(f"{where}: the block says it belongs at offset {own_offset}")
    return area[: size + min(check_size, len(area) - size)]


def _validation(area: bytes, size: int, base: int, what: str) -> Sealed | None:
    """The sealed SHA-256 of the block, when the validation record carries one."""
    check_size = VALIDATION.unpack_from(area, size)[0]
    inner = size + VALIDATION.size
    for entry in iter_entries(area, inner, size + check_size, base, what):
        if entry.value == ValueType.AES_CCM:
            return sealed(entry, what)
    return None


def read_metadata(src: ByteSource) -> FveMetadata:
    """Parse the BitLocker volume ``src`` (a partition, or a whole device): header, a valid
    metadata copy, its protectors. Raises BitlockerError naming what is wrong and where."""
    head = _boot_sector(src)
    damaged: list[str] = []
    for index, offset in enumerate(head.offsets):
        try:  # a copy with a good CRC but entries that make no sense is skipped the same way
            return _parse_block(src, head, _block(src, index, offset), index, tuple(damaged))
        except BitlockerError as exc:
            damaged.append(str(exc))
    raise BitlockerError("no readable FVE metadata copy: " + "; ".join(damaged))


def _parse_block(
    src: ByteSource, head: _Head, area: bytes, index: int, damaged: tuple[str, ...]
) -> FveMetadata:
    base = head.offsets[index]
    what = f"{src.name}: FVE metadata copy {index + 1} at offset {base}"
    header = BLOCK_HEADER.unpack_from(area)
    units, state, next_state, encrypted_size, header_sectors = (
        header[1],
        header[3],
        header[4],
        header[5],
        header[7],
    )
    size = units << 4
    meta_size, meta_version, meta_header, _, vol_guid, _, code, _, created = (
        METADATA_HEADER.unpack_from(area, BLOCK_HEADER.size)
    )
    if meta_version != 1 or meta_header != METADATA_HEADER.size:
        raise BitlockerError(f"{what}: metadata header version {meta_version}/{meta_header}")
    if not METADATA_HEADER.size <= meta_size <= size - BLOCK_HEADER.size:
        raise BitlockerError(f"{what}: metadata size {meta_size} overruns the {size}-byte block")
    method = Method.find(code)
    if method is None:
        raise BitlockerError(f"{what}: unknown encryption method 0x{code:04x}")
    protectors: list[Protector] = []
    description = ""
    fvek: Sealed | None = None
    relocated = (header[11], header_sectors * head.sector_size)
    end = BLOCK_HEADER.size + meta_size
    for entry in iter_entries(area, HEADERS, end, base, what):
        if entry.kind == EntryType.VMK and entry.value == ValueType.VMK:
            protectors.append(parse_protector(entry, what))
        elif entry.kind == EntryType.FVEK and entry.value == ValueType.AES_CCM and fvek is None:
            fvek = sealed(entry, what)
        elif entry.kind == EntryType.DESCRIPTION and entry.value == ValueType.STRING:
            description = description or utf16(entry.data)
        elif entry.kind == EntryType.VOLUME_HEADER and entry.value == ValueType.OFFSET_SIZE:
            relocated = _offset_size(entry, what)
    if fvek is None:
        raise BitlockerError(f"{what}: no sealed full-volume key (FVEK) entry")
    _check_relocated(relocated, head.sector_size, src.size, what)
    return FveMetadata(
        togo=head.togo,
        encrypt_on_write=head.guid == GUID_EOW,
        sector_size=head.sector_size,
        volume_guid=guid_text(vol_guid),
        method=method,
        created=filetime(created),
        description=description,
        state=state,
        next_state=next_state,
        encrypted_size=encrypted_size,
        header_offset=relocated[0],
        header_size=relocated[1],
        block_offsets=(header[8], header[9], header[10]),
        eow_offsets=head.eow_offsets,
        protectors=tuple(protectors),
        copy=index,
        damaged=damaged,
        sealed_fvek=fvek,
        validation=_validation(area, size, base, what),
        block_sha256=hashlib.sha256(area[:size]).digest(),
    )


def _offset_size(entry: Entry, what: str) -> tuple[int, int]:
    need(entry, 16, what)
    offset, size = struct.unpack_from("<QQ", entry.data)
    return int(offset), int(size)


def _check_relocated(relocated: tuple[int, int], sector_size: int, volume: int, what: str) -> None:
    """The relocated boot-sector area must be whole sectors inside the volume, past its head."""
    offset, size = relocated
    if (
        size <= 0
        or offset % sector_size
        or size % sector_size
        or offset < size
        or offset + size > volume
    ):
        raise BitlockerError(
            f"{what}: relocated boot sectors ({size} bytes at offset {offset}) do not fit the"
            f" {volume}-byte volume"
        )


def probe_notes(src: ByteSource) -> tuple[str, ...]:
    """What ``clonebay probe`` shows of a BitLocker volume: method, volume GUID, protectors and
    recovery key IDs, damaged copies; or why the metadata could not be read (the volume is
    copied whole either way)."""
    try:
        meta = read_metadata(src)
    except InputError as exc:
        return (f"BitLocker metadata not readable: {exc}",)
    return metadata_notes(meta)


def metadata_notes(meta: FveMetadata) -> tuple[str, ...]:
    """``probe_notes`` of metadata already read."""
    created = f", created {meta.created:%Y-%m-%d}" if meta.created else ""
    label = f", description {meta.description!r}" if meta.description else ""
    notes = [
        f"BitLocker{' To Go' if meta.togo else ''}: {meta.method.text}, volume GUID"
        f" {meta.volume_guid}{created}{label}",
        "BitLocker protectors: " + (", ".join(p.text for p in meta.protectors) or "none"),
    ]
    notes.extend(f"BitLocker recovery key ID: {guid}" for guid in meta.recovery_key_ids)
    notes.extend(f"{reason}; copy {meta.copy + 1} was read" for reason in meta.damaged)
    if meta.encrypt_on_write:
        notes.append("BitLocker is still encrypting this volume on write (used space only)")
    if (meta.state, meta.next_state) != (STATE_ENCRYPTED, STATE_ENCRYPTED):
        notes.append(f"BitLocker conversion under way (state {meta.state}/{meta.next_state})")
    return tuple(notes)
