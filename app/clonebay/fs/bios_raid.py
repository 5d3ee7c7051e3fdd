"""Firmware RAID on a whole disk: Intel RST (IMSM) and SNIA DDF metadata, explained.

A motherboard's RAID mode (Intel Rapid Storage Technology, "RST"; or a controller writing SNIA
DDF) keeps its array description in the last sectors of every member disk, outside any
partition. Windows and the firmware then see one RAID volume; clonebay, like any Linux that has
not assembled it, sees each member disk on its own. ``raid_notes`` says so before a copy.

IMSM (mdadm super-intel.c, ``struct imsm_super``, little-endian): the metadata parameter block
(MPB) starts in the second-last sector with "Intel Raid ISM Cfg Sig. " and a version; then
check_sum u32 at 0x20, mpb_size u32 at 0x24, num_disks u8 at 0x38, num_raid_devs u8 at 0x39;
the disk table (48-byte ``imsm_disk``: serial[16] first) at 0xD8, then one ``imsm_dev`` per
volume: name[16], size u64 (sectors) and at byte 112 its map (raid_level at +15, num_members at
+16, a u32 per member from +48; a second map follows while migrating). An MPB longer than a
sector goes on in the sectors just before the second-last one. The checksum is the u32 sum of
the MPB's words, less the check_sum word itself.

DDF (SNIA DDF 2.0, mdadm super-ddf.c, big-endian): the anchor header is the last 512 bytes:
magic 0xDE11DE11, a CRC-32 of the 512 bytes with the crc field as 0xFFFFFFFF (zlib's polynomial,
but as mdadm's crc32.c computes it: initial value 0 and no final inversion), a 24-byte GUID whose
first 8 bytes name the vendor, and the revision.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from clonebay.errors import InputError
from clonebay.system.blockdev import ByteSource
from clonebay.units import human_size

IMSM_SIG = b"Intel Raid ISM Cfg Sig. "
IMSM_HEAD = struct.Struct("<32sII")  # sig (with version), check_sum, mpb_size
IMSM_DISKS_AT = 0xD8
IMSM_DISK_SIZE = 48
IMSM_DEV_BASE = 164 - 52  # an imsm_dev without its map
IMSM_MAP_BASE = 52 - 4  # an imsm_map without its disk_ord_tbl
IMSM_MAX_MPB = 1 << 20  # far beyond any real MPB (255 disks, a few volumes)
DDF_MAGIC = 0xDE11DE11
DDF_HEAD = struct.Struct(">II24s8s")  # magic, crc, guid, revision


@dataclass(frozen=True)
class ImsmVolume:
    name: str
    size: int  # bytes
    level: int  # 0, 1, 5; RAID10 is level 1 over 4 members
    members: int

    @property
    def level_name(self) -> str:
        return "RAID10" if self.level == 1 and self.members > 2 else f"RAID{self.level}"


@dataclass(frozen=True)
class Imsm:
    version: str
    serials: tuple[str, ...]
    volumes: tuple[ImsmVolume, ...]


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", errors="replace").strip()


def _imsm_volumes(mpb: bytes, count: int, pos: int) -> tuple[ImsmVolume, ...]:
    volumes = []
    for _ in range(count):
        if pos + IMSM_DEV_BASE + IMSM_MAP_BASE + 4 > len(mpb):
            raise InputError("Intel RST metadata: a volume record runs past the block")
        name = _text(mpb[pos : pos + 16])
        low, high = struct.unpack_from("<II", mpb, pos + 16)
        level, members = mpb[pos + 112 + 15], mpb[pos + 112 + 16]
        migrating = mpb[pos + 80 + 8]
        map_size = IMSM_MAP_BASE + 4 * max(members, 1)
        pos += IMSM_DEV_BASE + map_size
        if migrating:
            second = mpb[pos + 16] if pos + 17 <= len(mpb) else 1
            pos += IMSM_MAP_BASE + 4 * max(second, 1)
        volumes.append(ImsmVolume(name, ((high << 32) | low) * 512, level, members))
    return tuple(volumes)


def read_imsm(disk: ByteSource, sector: int = 512) -> Imsm | None:
    """The IMSM block of a whole disk with ``sector``-byte sectors, or None (not there, or its
    checksum or sizes are wrong)."""
    if disk.size < 3 * sector:
        return None
    first = disk.pread(sector, disk.size - 2 * sector)
    if not first.startswith(IMSM_SIG):
        return None
    sig, check_sum, mpb_size = IMSM_HEAD.unpack_from(first)
    if not IMSM_DISKS_AT <= mpb_size <= min(IMSM_MAX_MPB, disk.size - 2 * sector):
        return None
    extra = -(-mpb_size // sector) - 1
    mpb = first + (disk.pread(extra * sector, disk.size - (2 + extra) * sector) if extra else b"")
    mpb = mpb[:mpb_size]
    words = struct.unpack_from(f"<{mpb_size // 4}I", mpb)
    if (sum(words) - check_sum) & 0xFFFFFFFF != check_sum:
        return None
    num_disks, num_devs = mpb[0x38], mpb[0x39]
    disks_end = IMSM_DISKS_AT + num_disks * IMSM_DISK_SIZE
    if disks_end > mpb_size:
        return None
    serials = tuple(
        _text(mpb[at : at + 16]) for at in range(IMSM_DISKS_AT, disks_end, IMSM_DISK_SIZE)
    )
    try:
        volumes = _imsm_volumes(mpb, num_devs, disks_end)
    except InputError:
        return None
    return Imsm(_text(sig[len(IMSM_SIG) :]), serials, volumes)


def read_ddf_anchor(disk: ByteSource) -> tuple[str, str] | None:
    """(vendor, revision) of a valid DDF anchor in the disk's last 512 bytes, or None."""
    if disk.size < 1024:
        return None
    anchor = disk.pread(512, disk.size - 512)
    magic, crc, guid, revision = DDF_HEAD.unpack_from(anchor)
    if magic != DDF_MAGIC:
        return None
    if zlib.crc32(anchor[:4] + b"\xff" * 4 + anchor[8:], 0xFFFFFFFF) ^ 0xFFFFFFFF != crc:
        return None
    return _text(guid[:8]) or "unknown vendor", _text(revision)


SEPARATE = (
    "clonebay sees each member disk separately, not the RAID volume the firmware and Windows"
    " show; a copy of one member carries that disk's part and the RAID metadata in its last"
    " sectors, so the target claims a place in the same array"
)


def _imsm_notes(imsm: Imsm) -> tuple[str, ...]:
    vols = "; ".join(
        f"{v.level_name} volume {v.name!r} of {human_size(v.size)} over {v.members} disks"
        for v in imsm.volumes
    )
    serials = ", ".join(imsm.serials) or "none listed"
    notes = [
        f"this disk is a member of an Intel RST RAID volume (IMSM metadata {imsm.version} in its"
        f" last sectors): {vols or 'no volume defined'}; member disks by serial: {serials}",
        SEPARATE,
    ]
    if any(v.level == 1 and v.members == 2 for v in imsm.volumes):
        notes.append(
            "RAID1: each member holds a whole copy of the volume from byte 0, so the partitions"
            " clonebay shows on this disk are the volume's"
        )
    striped = any(v.level != 1 or v.members != 2 for v in imsm.volumes)
    if striped:
        notes.append(
            "RAID0, RAID5 and RAID10 stripe the volume's data over the members: no member alone"
            " holds its partitions or files"
        )
    after = "; in AHCI mode a striped volume cannot be read until RAID mode is set again"
    notes.append(
        "in the BIOS switch SATA mode from RAID to AHCI only after Windows has been made to"
        " start with the AHCI driver (boot it once into Safe Mode: bcdedit /set {current}"
        " safeboot minimal; switch to AHCI; after that boot, bcdedit /deletevalue {current}"
        " safeboot), or it stops with INACCESSIBLE_BOOT_DEVICE" + (after if striped else "")
    )
    return tuple(notes)


def raid_notes(disk: ByteSource) -> tuple[str, ...]:
    """What a technician must know when ``disk`` (a WHOLE disk, not a partition) belongs to a
    firmware RAID array: () when it does not."""
    try:
        imsm = read_imsm(disk) or read_imsm(disk, 4096)
        ddf = None if imsm else read_ddf_anchor(disk)
    except InputError:
        return ()
    if imsm is not None:
        return _imsm_notes(imsm)
    if ddf is not None:
        vendor, revision = ddf
        return (
            f"this disk is a member of a RAID array in SNIA DDF format (revision {revision},"
            f" written by {vendor!r}; its anchor is the disk's last sector)",
            SEPARATE,
        )
    return ()
