"""Which filesystem is in a volume, and what must be copied of it.

The prober first looks for things that must never be parsed or changed (BitLocker, LUKS, LVM
physical volumes, md RAID members, Windows dynamic disks and Storage Spaces, filesystems we have no
parser for) and sends them to a raw copy with the reason. Then it asks each native parser in turn;
a parser that raises FilesystemError also sends the volume to a raw copy, with the parser's words
as the reason. Raw is never wrong, only slower: the copy engine skips zero chunks of raw volumes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from clonebay.errors import FilesystemError, InputError
from clonebay.fs import bitlocker_probe, ext, fat, ntfs, swap
from clonebay.fs.bitlocker_meta import is_bitlocker
from clonebay.fs.keyring import Keyring
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import ByteSource

HEAD = 64 << 10
SUPERBLOCK_TAIL = 128 << 10  # btrfs keeps its superblock at 64 KiB


@dataclass(frozen=True)
class Signature:
    """A volume format recognised by magic bytes at a fixed offset, always copied raw."""

    fstype: str
    offset: int
    magic: bytes
    state: VolumeState
    reason: str


SIGNATURES = (
    Signature(
        "luks",
        0,
        b"LUKS\xba\xbe",
        VolumeState.ENCRYPTED,
        "LUKS: the copy keeps its encryption and key slots",
    ),
    Signature("lvm2-pv", 512 + 24, b"LVM2 001", VolumeState.UNKNOWN, "LVM physical volume"),
    Signature("exfat", 3, b"EXFAT   ", VolumeState.UNKNOWN, "exFAT has no native parser yet"),
    Signature("refs", 3, b"ReFS\0\0\0\0", VolumeState.UNKNOWN, "ReFS has no native parser"),
    Signature("xfs", 0, b"XFSB", VolumeState.UNKNOWN, "XFS has no native parser yet"),
    Signature(
        "btrfs",
        0x10040,
        b"_BHRfS_M",
        VolumeState.UNKNOWN,
        "btrfs has no native parser yet",
    ),
)

MD_MAGIC = 0xA92B4EFC
# GPT partition types whose contents are never parsed (Windows LDM, Storage Spaces, Linux RAID).
RAW_PARTITION_TYPES = {
    "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": "Windows dynamic disk (LDM) metadata",
    "AF9B60A0-1431-4F62-BC68-3311714A69AD": "Windows dynamic disk (LDM) data",
    "E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D": "Windows Storage Spaces member",
    "A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID member",
    "E6D6D379-F507-44C2-A23C-238F2A3DF928": "LVM physical volume",
    "0x42": "Windows dynamic disk (LDM)",
    "0xfd": "Linux RAID member",
    "0x8e": "LVM physical volume",
}

# Native parsers, asked in this order. NTFS before FAT: both carry a BIOS parameter block.
PARSERS: tuple[ModuleType, ...] = (ntfs, ext, fat, swap)


def raw_volume(src: ByteSource, fstype: str, reason: str, state: VolumeState) -> Volume:
    """A volume copied byte for byte (zero chunks skipped by the engine)."""
    used = (Extent(0, src.size),) if src.size else ()
    return Volume(fstype, src.size, used, CopyMethod.RAW, state, reason=reason)


def _md_member(src: ByteSource, head: bytes) -> bool:
    """md RAID superblock 1.1 (offset 0), 1.2 (4 KiB), 1.0 (end - 8 KiB), 0.90 (end - 64 KiB)."""
    for offset in (0, 4096):
        if len(head) >= offset + 4 and struct.unpack_from("<I", head, offset)[0] == MD_MAGIC:
            return True
    for offset in (((src.size - 8192) & ~4095), ((src.size & ~0xFFFF) - 0x10000)):
        if offset > 0 and struct.unpack("<I", src.pread(4, offset))[0] == MD_MAGIC:
            return True
    return False


def _signature(src: ByteSource, head: bytes) -> Signature | None:
    for sig in SIGNATURES:
        end = sig.offset + len(sig.magic)
        if end <= len(head):
            window = head[sig.offset : end]
        elif end <= src.size:
            window = src.pread(len(sig.magic), sig.offset)
        else:
            continue
        if window == sig.magic:
            return sig
    return None


def probe_volume(src: ByteSource, type_id: str = "", keys: Keyring | None = None) -> Volume:
    """Identify the volume in ``src`` and map what a copy must carry.

    ``type_id`` is the partition's type (GPT GUID or MBR "0x.."), used to refuse parsing of
    containers that hold other volumes. ``keys``: the secrets given for locked volumes; a locked
    volume one of them opens is mapped by the filesystem inside. Raises InputError only when
    ``src`` cannot be read at all.
    """
    if src.size == 0:
        return Volume("empty", 0, (), CopyMethod.NATIVE, reason="empty partition")
    container = RAW_PARTITION_TYPES.get(type_id.upper() if "-" in type_id else type_id.lower())
    if container:
        return raw_volume(src, "container", container, VolumeState.UNKNOWN)
    head = src.pread(min(HEAD, src.size), 0)
    if is_bitlocker(head):  # "-FVE-FS-", or To Go's FAT32 sector with a BitLocker GUID
        return bitlocker_probe.probe(src, keys, probe_volume)
    sig = _signature(src, head)
    if sig is not None:
        return raw_volume(src, sig.fstype, sig.reason, sig.state)
    if _md_member(src, head):
        return raw_volume(src, "md-member", "md RAID member", VolumeState.UNKNOWN)
    for parser in PARSERS:
        detect: Callable[[bytes], bool] = parser.detect
        if not detect(head):
            continue
        name = parser.__name__.rsplit(".", 1)[-1]
        try:
            volume: Volume = parser.probe(src)
        except FilesystemError as exc:
            return raw_volume(src, name, str(exc), VolumeState.UNKNOWN)
        except InputError as exc:  # read past the end of a truncated partition
            return raw_volume(src, name, str(exc), VolumeState.UNKNOWN)
        return volume
    reason = "no filesystem (the start is all zeros)" if not any(head) else "no known filesystem"
    return raw_volume(src, "unknown", reason, VolumeState.UNKNOWN)
