"""Which filesystem is in a volume, and what must be copied of it.

The prober first looks for things that must never be parsed or changed (BitLocker, LUKS, md RAID
members, Windows dynamic disks and Storage Spaces, filesystems we have no parser for) and sends
them to a raw copy with the reason; an LVM physical volume is mapped LV by LV (lvm_probe) when
it can be, or copied whole with the reason. Then it asks each native parser in turn;
a parser that raises FilesystemError also sends the volume to a raw copy, with the parser's words
as the reason. Raw is never wrong, only slower: the copy engine skips zero chunks of raw volumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import ModuleType

from clonebay.errors import FilesystemError, InputError
from clonebay.fs import bitlocker_probe, ext, fat, luks_probe, lvm_probe, md_super, ntfs, swap
from clonebay.fs.bitlocker_meta import is_bitlocker
from clonebay.fs.keyring import Keyring
from clonebay.fs.luks_header import is_luks
from clonebay.fs.lvm_label import find_label
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
# Of those, the types whose volumes are looked at for what they say they are: an LVM type with
# an LVM2 label goes to lvm_probe, a RAID type with an md superblock to md_super (for its
# reason); without one, they stay raw containers.
LVM_TYPES = ("E6D6D379-F507-44C2-A23C-238F2A3DF928", "0x8e")
MD_TYPES = ("A19D880F-05FC-4D3B-A006-743F0F84911E", "0xfd")

# Native parsers, asked in this order. NTFS before FAT: both carry a BIOS parameter block.
PARSERS: tuple[ModuleType, ...] = (ntfs, ext, fat, swap)


def raw_volume(src: ByteSource, fstype: str, reason: str, state: VolumeState) -> Volume:
    """A volume copied byte for byte (zero chunks skipped by the engine)."""
    used = (Extent(0, src.size),) if src.size else ()
    return Volume(fstype, src.size, used, CopyMethod.RAW, state, reason=reason)


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


def _typed_container(
    src: ByteSource, head: bytes, kind: str, container: str, inner: Callable[[ByteSource], Volume]
) -> Volume:
    """A partition typed LVM or Linux RAID: what its superblock or label says, else raw."""
    member = md_super.probe(src, head, inner)
    if member is not None:
        return member
    if kind in LVM_TYPES and find_label(head) is not None:
        return lvm_probe.probe(src, inner)
    return raw_volume(src, "container", container, VolumeState.UNKNOWN)


def probe_volume(src: ByteSource, type_id: str = "", keys: Keyring | None = None) -> Volume:
    """Identify the volume in ``src`` and map what a copy must carry.

    ``type_id`` is the partition's type (GPT GUID or MBR "0x.."), used to refuse parsing of
    containers that hold other volumes. ``keys``: the secrets given for locked volumes; a locked
    volume one of them opens is mapped by the filesystem inside. Raises InputError only when
    ``src`` cannot be read at all.
    """
    if src.size == 0:
        return Volume("empty", 0, (), CopyMethod.NATIVE, reason="empty partition")
    kind = type_id.upper() if "-" in type_id else type_id.lower()
    container = RAW_PARTITION_TYPES.get(kind)
    inner = partial(probe_volume, keys=keys)
    if container and kind not in LVM_TYPES + MD_TYPES:
        return raw_volume(src, "container", container, VolumeState.UNKNOWN)
    head = src.pread(min(HEAD, src.size), 0)
    if container:
        return _typed_container(src, head, kind, container, inner)
    if is_bitlocker(head):  # "-FVE-FS-", or To Go's FAT32 sector with a BitLocker GUID
        return bitlocker_probe.probe(src, keys, probe_volume)
    if is_luks(head):  # "LUKS\xba\xbe": LUKS1 or LUKS2
        return luks_probe.probe(src, keys, probe_volume)
    # md before LVM: a RAID1 member with its superblock at the end may start with a PV
    member = md_super.probe(src, head, inner)
    if member is not None:
        return member
    if find_label(head) is not None:  # "LABELONE" ... "LVM2 001" in one of sectors 0-3
        return lvm_probe.probe(src, inner)
    sig = _signature(src, head)
    if sig is not None:
        return raw_volume(src, sig.fstype, sig.reason, sig.state)
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
