"""One USB stick for the system and the images: the live ISO, then a partition for images.

The live ISO is an isohybrid image written by xorriso (live-build): the same bytes are a CD
(ISO 9660 with El Torito) and a disk. Its first 32 KiB, the ISO's "system area", hold three
partition maps at once; ``xorriso -report_system_area plain`` and ``fdisk -l`` on the 323 MiB
ISO of 2026-12-04 show (512-byte sectors):

    MBR  (LBA 0)       boot code 0-439 (isohdpfx: loads isolinux from an LBA patched in at 432),
                       disk signature 440, entries at 446:
                         1  0x80 type 0x00  64 .. 661503   the whole ISO from 32 KiB on
                         2  0x00 type 0xef  740 .. 8163    /boot/grub/efi.img, the EFI system part.
                         3, 4  empty
    GPT  (LBA 1)       entry array at LBA 12 (208 entries), usable 64 .. 661450, backup header at
                       661503 (the ISO's last sector); entries 1 (ISO) and 2 (efi.img)
    APM  (2 KiB blocks 1-2)  one entry for efi.img, for Macs

The MBR has no 0xEE entry, so it is not a protective MBR: the UEFI spec, OVMF, Linux and libblkid
all ignore the GPT then and read the MBR. SeaBIOS runs the MBR's boot code, which finds isolinux
by the LBA stored in the code, not through the entries; OVMF finds the ESP through MBR entry 2.

The images partition goes after the ISO, aligned to 1 MiB, into the MBR's first free slot (3),
type 0x07 for exFAT or 0x83 for ext4. The boot code, the disk signature and the ISO's entries
are left byte for byte. The GPT, which firmware that reads it anyway (Macs) would use, is kept
valid and in step: the same partition goes into its first free entry (3), its last usable LBA
and its backup (moved from the ISO's end to the stick's end, as the spec wants) follow, and both
CRCs are recomputed. The APM is left alone: it only names the ESP for Macs. Nothing outside the
system area's tables changes, so the ISO's own bytes (its files, the stale backup GPT inside it)
read back identical.

exFAT labels hold at most 11 characters, so the label is ``CLONEBAYIMG`` (the GPT entry's name
too), which a live system finds by label (``find_stick_store``).

This module is pure apart from ``find_stick_store``: bytes in, a plan and bytes out; the job that
writes a stick is system/makestick.py.
"""

from __future__ import annotations

import enum
import os
import struct
import uuid
import zlib
from dataclasses import dataclass

from clonebay.errors import InputError, TargetTooSmallError, UsageError
from clonebay.system import gpt, mbr
from clonebay.system.run import output
from clonebay.system.tools import which
from clonebay.units import human_size

SECTOR = 512
MIB = 1 << 20
SYSTEM_AREA = 32 * 1024  # ISO 9660 leaves its first 16 blocks of 2 KiB to the system (ECMA-119)
ISO_MAGIC_OFFSET = SYSTEM_AREA + 1  # the primary volume descriptor's "CD001"
MIN_IMAGES = 64 * MIB  # an images partition smaller than this would hold no image worth having
IMAGES_LABEL = "CLONEBAYIMG"  # exFAT labels hold 11 characters: "CLONEBAY-IMG" has 12
BY_LABEL = "/dev/disk/by-label"
# xorriso's isohybrid geometry (-partition_hd_cyl 64, -partition_sec_hd 32): 1 MiB cylinders.
HEADS, SECTORS_PER_TRACK = 64, 32
MAX_MBR_END = (1 << 32) * SECTOR  # MBR entries count 32-bit sectors: 2 TiB
PROTECTIVE = 0xEE


class ImagesFs(enum.StrEnum):
    """The filesystems an images partition can have."""

    EXFAT = "exfat"  # readable on Windows and macOS as well; the default
    EXT4 = "ext4"


@dataclass(frozen=True)
class FsKind:
    mbr_type: int
    gpt_type: str
    label_max: int  # characters for exFAT (UTF-16 units), bytes for ext4
    mkfs: tuple[str, ...]  # argv before the label and the device
    package: str


FS_KINDS = {
    # 0x07 "HPFS/NTFS/exFAT" and Microsoft basic data: what Windows expects of an exFAT volume.
    ImagesFs.EXFAT: FsKind(
        0x07, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 11, ("mkfs.exfat", "-L"), "exfatprogs"
    ),
    ImagesFs.EXT4: FsKind(
        0x83, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", 16, ("mkfs.ext4", "-q", "-L"), "e2fsprogs"
    ),
}


def check_label(fs: ImagesFs, label: str) -> None:
    """Refuse a label the filesystem cannot hold, before anything is written."""
    kind = FS_KINDS[fs]
    length = len(label.encode("utf-16-le")) // 2 if fs is ImagesFs.EXFAT else len(label.encode())
    if not label or length > kind.label_max:
        raise UsageError(
            f"the label {label!r} does not fit {fs.value}: 1 to {kind.label_max}"
            f" {'characters' if fs is ImagesFs.EXFAT else 'bytes'}"
        )


@dataclass(frozen=True)
class IsoLayout:
    """What the ISO's system area says: its MBR entries, the free slot, its GPT if any."""

    size: int
    mbr_entries: tuple[mbr.MbrEntry, ...]  # the used primary slots (type 0 counts if sized)
    free_slot: int  # 1-4
    gpt_header: gpt.GptHeader | None
    gpt_entries: tuple[gpt.GptEntry, ...]
    gpt_free: int  # 1-based free entry index (0 without GPT)

    @property
    def gpt_array_sectors(self) -> int:
        if self.gpt_header is None:
            return 0
        header = self.gpt_header
        return -(-header.entry_count * header.entry_size // SECTOR)


def parse_iso(head: bytes, iso_size: int) -> IsoLayout:
    """Read the hybrid layout from the ISO's first ``SYSTEM_AREA`` (+ the "CD001" after it)."""
    if len(head) < SYSTEM_AREA + 6 or head[ISO_MAGIC_OFFSET : ISO_MAGIC_OFFSET + 5] != b"CD001":
        raise InputError("this is not an ISO 9660 image (no CD001 at byte 32769)")
    if iso_size % SECTOR:
        raise InputError(f"the ISO's size {iso_size} is not a whole number of 512-byte sectors")
    try:
        slots = mbr.parse_entries(head[:SECTOR])
    except InputError as exc:
        raise InputError(
            "the ISO has no MBR: it is not an isohybrid image and cannot boot from a USB stick"
        ) from exc
    used = tuple(e for e in slots if e.type_id or e.sectors)
    if any(e.type_id == PROTECTIVE for e in used):
        raise InputError("the ISO's MBR is a protective one (GPT only): not supported")
    if not used:
        raise InputError("the ISO's MBR has no partitions: it is not an isohybrid image")
    free = [e.number for e in slots if not (e.type_id or e.sectors)]
    if not free:
        raise InputError("the ISO's MBR has no free slot for an images partition")
    sectors = iso_size // SECTOR
    for e in used:
        if e.start_lba + e.sectors > sectors:
            raise InputError(f"the ISO's MBR partition {e.number} ends past the ISO's end")
    header, entries, gpt_free = _parse_gpt(head, sectors)
    return IsoLayout(iso_size, used, free[0], header, entries, gpt_free)


def _parse_gpt(
    head: bytes, sectors: int
) -> tuple[gpt.GptHeader | None, tuple[gpt.GptEntry, ...], int]:
    if head[SECTOR : SECTOR + 8] != gpt.SIGNATURE:
        return None, (), 0
    header = gpt.parse_header(head[SECTOR : 2 * SECTOR], "the ISO's GPT")
    start, length = header.entries_lba * SECTOR, header.entry_count * header.entry_size
    if header.my_lba != 1 or start + length > SYSTEM_AREA:
        raise InputError("the ISO's GPT entry array lies outside its system area: not supported")
    entries = tuple(gpt.parse_entries(header, head[start : start + length], "the ISO's GPT"))
    if any(e.last_lba >= sectors for e in entries):
        raise InputError("a partition of the ISO's GPT ends past the ISO's end")
    taken = {e.index for e in entries}
    free = next((i for i in range(1, header.entry_count + 1) if i not in taken), 0)
    if not free:
        raise InputError("the ISO's GPT has no free entry for an images partition")
    return header, entries, free


@dataclass(frozen=True)
class StickPlan:
    """Where the images partition goes on one device, and what it is."""

    layout: IsoLayout
    device_size: int
    fs: ImagesFs
    label: str
    start: int  # bytes, 1 MiB aligned
    size: int  # bytes, a multiple of 1 MiB
    unique_guid: uuid.UUID  # its GPT entry's

    @property
    def slot(self) -> int:
        """The partition number: the MBR slot (the kernel numbers partitions by it)."""
        return self.layout.free_slot

    @property
    def end(self) -> int:
        return self.start + self.size


def _align_up(n: int) -> int:
    return -(-n // MIB) * MIB


def needed_size(layout: IsoLayout) -> int:
    """The smallest device that takes the ISO and a ``MIN_IMAGES`` partition after it."""
    backup = (layout.gpt_array_sectors + 1) * SECTOR if layout.gpt_header else 0
    return _align_up(layout.size) + MIN_IMAGES + backup


def plan_stick(
    layout: IsoLayout,
    device_size: int,
    fs: ImagesFs = ImagesFs.EXFAT,
    label: str = IMAGES_LABEL,
    unique_guid: uuid.UUID | None = None,
) -> StickPlan:
    """The images partition from the first MiB boundary after the ISO to the last one before
    the device's end (or its backup GPT); TargetTooSmallError, with the numbers, below
    ``needed_size``."""
    check_label(fs, label)
    needed = needed_size(layout)
    if device_size < needed:
        raise TargetTooSmallError(
            f"the device holds {human_size(device_size)} ({device_size} bytes); the ISO"
            f" ({human_size(layout.size)}, {layout.size} bytes) and an images partition of at"
            f" least {human_size(MIN_IMAGES)} need {human_size(needed)} ({needed} bytes);"
            " nothing was written"
        )
    start = _align_up(layout.size)
    backup = (layout.gpt_array_sectors + 1) * SECTOR if layout.gpt_header else 0
    end = min(device_size - backup, MAX_MBR_END) // MIB * MIB
    return StickPlan(
        layout, device_size, fs, label, start, end - start, unique_guid or uuid.uuid4()
    )


def chs(lba: int) -> bytes:
    """The 3-byte cylinder/head/sector address of ``lba`` in the ISO's geometry; past cylinder
    1023 the largest one (BIOSes use the LBA fields then)."""
    per_cylinder = HEADS * SECTORS_PER_TRACK
    cylinder, rest = divmod(lba, per_cylinder)
    head, sector = divmod(rest, SECTORS_PER_TRACK)
    if cylinder > 1023:
        cylinder, head, sector = 1023, HEADS - 1, SECTORS_PER_TRACK - 1
    return bytes((head, (sector + 1) | (cylinder >> 8) << 6, cylinder & 0xFF))


def mbr_entry(plan: StickPlan) -> bytes:
    """The 16-byte MBR entry of the images partition (not bootable)."""
    first, count = plan.start // SECTOR, plan.size // SECTOR
    kind = FS_KINDS[plan.fs]
    return mbr.ENTRY.pack(0, chs(first), kind.mbr_type, chs(first + count - 1), first, count)


def gpt_entry(plan: StickPlan) -> bytes:
    """The images partition's GPT entry (type by filesystem, named by its label)."""
    name = plan.label.encode("utf-16-le")[:72]
    return gpt.ENTRY.pack(
        uuid.UUID(FS_KINDS[plan.fs].gpt_type).bytes_le,
        plan.unique_guid.bytes_le,
        plan.start // SECTOR,
        plan.end // SECTOR - 1,
        0,
        name,
    )


def patch_head(head: bytes, plan: StickPlan) -> bytes:
    """The system area with the images partition added: its MBR slot, and (with a GPT) its
    entry, the primary header's backup LBA, last usable LBA and both CRCs. Nothing else."""
    out = bytearray(head[:SYSTEM_AREA])
    slot = mbr.TABLE_OFFSET + 16 * (plan.slot - 1)
    out[slot : slot + 16] = mbr_entry(plan)
    header = plan.layout.gpt_header
    if header is None:
        return bytes(out)
    at = header.entries_lba * SECTOR + (plan.layout.gpt_free - 1) * header.entry_size
    out[at : at + gpt.ENTRY.size] = gpt_entry(plan)
    array = _array(out, header)
    last = plan.device_size // SECTOR - 1
    last_usable = last - plan.layout.gpt_array_sectors - 1  # the backup array comes after it
    primary = out[SECTOR : 2 * SECTOR]
    out[SECTOR : 2 * SECTOR] = _header(
        primary,
        my=1,
        alternate=last,
        entries=header.entries_lba,
        last_usable=last_usable,
        crc=zlib.crc32(array),
    )
    return bytes(out)


def backup_gpt(patched: bytes, plan: StickPlan) -> tuple[int, bytes] | None:
    """(offset, bytes) of the backup GPT at the device's end: the entry array, then the header
    in the last sector; None without a GPT."""
    header = plan.layout.gpt_header
    if header is None:
        return None
    array = _array(patched, header)
    padded = array + bytes(plan.layout.gpt_array_sectors * SECTOR - len(array))
    last = plan.device_size // SECTOR - 1
    entries_lba = last - plan.layout.gpt_array_sectors
    primary = patched[SECTOR : 2 * SECTOR]
    last_usable = struct.unpack_from("<Q", primary, 48)[0]
    backup = _header(
        primary,
        my=last,
        alternate=1,
        entries=entries_lba,
        last_usable=last_usable,
        crc=zlib.crc32(array),
    )
    return entries_lba * SECTOR, padded + backup


def _array(system_area: bytes | bytearray, header: gpt.GptHeader) -> bytes:
    start = header.entries_lba * SECTOR
    return bytes(system_area[start : start + header.entry_count * header.entry_size])


def _header(
    sector: bytes | bytearray, *, my: int, alternate: int, entries: int, last_usable: int, crc: int
) -> bytes:
    """A header sector like ``sector`` with these fields and its CRC32 recomputed (UEFI 2.10
    5.3.2: the CRC covers HeaderSize bytes with the CRC field zeroed)."""
    fields = list(gpt.HEADER.unpack_from(sector))
    fields[3], fields[5], fields[6], fields[8] = 0, my, alternate, last_usable
    fields[10], fields[13] = entries, crc
    out = bytearray(sector)
    gpt.HEADER.pack_into(out, 0, *fields)
    size = fields[2]
    struct.pack_into("<I", out, 16, zlib.crc32(out[:size]))
    return bytes(out)


def find_stick_store(label: str = IMAGES_LABEL, by_label: str = BY_LABEL) -> str | None:
    """The device node of the partition labelled ``label``, or None when there is none: udev's
    /dev/disk/by-label link (as udev escapes the name), else blkid probing every device (no
    udev, or its rules not run yet); the first one when two sticks carry the label."""
    link = os.path.join(by_label, label.replace("/", "\\x2f").replace(" ", "\\x20"))
    if os.path.exists(link):
        return os.path.realpath(link)
    if which("blkid") is None:
        return None
    # -c /dev/null: probe the devices now, never trust a cache of another boot; exit 2: none
    found = output(
        ["blkid", "-c", "/dev/null", "-o", "device", "-t", f"LABEL={label}"], ok_codes=(0, 2)
    )
    devices = sorted(line.strip() for line in found.splitlines() if line.strip())
    return devices[0] if devices else None
