"""Linux md RAID members: read the superblock, and say what a copy of one member means.

An md member carries a superblock that names its array; the kernel assembles members into
/dev/mdN. Where the superblock sits depends on its version (mdadm's super0.c and super1.c,
the kernel's include/uapi/linux/raid/md_p.h):

- 0.90: 4 KiB at the last 64 KiB boundary minus 64 KiB; array data from byte 0.
- 1.0: 8 KiB before the end, rounded down to 4 KiB; array data from byte 0.
- 1.1: at byte 0; 1.2: at byte 4096; array data from ``data_offset`` (sectors).

So a RAID1 member with a 0.90 or 1.0 superblock starts with the array's content itself: a
partition table or a filesystem that any tool ignoring md (a firmware, a boot loader, another
system) reads as if the disk were alone. clonebay copies a member whole, so the target stays a
member of the same array (same array UUID, its own device role); the reason says which array.

Version 1 layout (``struct mdp_superblock_1``, little-endian, 256 bytes then ``dev_roles[]``,
u16 each): its checksum is the sum of the le32 words up to ``dev_roles[max_dev]`` with
``sb_csum`` as zero, the carry folded back once (drivers/md/md.c ``calc_sb_1_csum``). Version
0.90 (``mdp_super_t``, host byte order: little-endian on PCs) is 1024 u32 words; its checksum is
the sum of all words with ``sb_csum`` as zero, folded the same way (mdadm ``calc_sb0_csum``).
"""

from __future__ import annotations

import struct
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass

from clonebay.errors import InputError
from clonebay.fs.pieced import Piece, PiecedSource
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import ByteSource

MD_MAGIC = 0xA92B4EFC
SB1 = struct.Struct(
    "<IIII16s32s"  # magic, major_version, feature_map, pad0, set_uuid, set_name
    "QiIQ"  # ctime, level, layout, size
    "IIiIQiIII"  # chunksize, raid_disks, bitmap_offset, new_level, reshape_position,
    # delta_disks, new_layout, new_chunk, new_offset
    "QQQQII16sBBHi"  # data_offset, data_size, super_offset, recovery_offset, dev_number,
    # cnt_corrected_read, device_uuid, devflags, bblog_shift, bblog_size, bblog_offset
    "QQQII32x"  # utime, events, resync_offset, sb_csum, max_dev, pad3
)
Sb1 = namedtuple(
    "Sb1",
    "magic major feature_map pad0 set_uuid set_name ctime level layout size chunksize"
    " raid_disks bitmap_offset new_level reshape_position delta_disks new_layout new_chunk"
    " new_offset data_offset data_size super_offset recovery_offset dev_number"
    " cnt_corrected_read device_uuid devflags bblog_shift bblog_size bblog_offset utime events"
    " resync_offset sb_csum max_dev",
)
SB1_CSUM_AT = 216
MAX_DEV = (4096 - 256) // 2  # the kernel refuses more roles than fit one 4 KiB block
SB0_BYTES = 4096
SB0_CSUM_WORD = 38
SB0_THIS_DISK_WORD = 992  # mdp_disk_t this_disk: number, major, minor, raid_disk, state
ROLE_NAMES = {0xFFFF: "a spare", 0xFFFE: "a faulty device", 0xFFFD: "a journal"}
LEVELS = {-1: "linear", 0: "RAID0", 1: "RAID1", 4: "RAID4", 5: "RAID5", 6: "RAID6", 10: "RAID10"}


@dataclass(frozen=True)
class MdSuper:
    """What a member's superblock says about its array and its own place in it."""

    version: str  # "0.90", "1.0", "1.1", "1.2"
    offset: int  # byte offset of the superblock in the member
    level: int
    name: str  # "host:name" (1.x) or "" (0.90)
    uuid: str  # as mdadm prints it: 8:8:8:8 hex digits
    raid_disks: int
    role: str  # "active device 0", "a spare", ...
    data: Extent  # where the array's data lies in this member
    checksum_ok: bool

    @property
    def level_name(self) -> str:
        return LEVELS.get(self.level, f"level {self.level}")


def _fold(total: int) -> int:
    return ((total & 0xFFFFFFFF) + (total >> 32)) & 0xFFFFFFFF


def _mdadm_uuid(raw: bytes) -> str:
    return ":".join(raw[i : i + 4].hex() for i in range(0, 16, 4))


def sb1_checksum(block: bytes) -> int:
    """The kernel's calc_sb_1_csum over a version-1 superblock (with its dev_roles)."""
    max_dev = min(struct.unpack_from("<I", block, 220)[0], MAX_DEV)
    size = 256 + max_dev * 2
    data = bytearray(block[:size])
    data[SB1_CSUM_AT : SB1_CSUM_AT + 4] = bytes(4)
    words = size // 4
    total = sum(struct.unpack_from(f"<{words}I", data))
    if size % 4:
        total += struct.unpack_from("<H", data, words * 4)[0]
    return _fold(total)


def parse_sb1(block: bytes, offset: int, member_size: int) -> MdSuper | None:
    """A version-1 superblock read at byte ``offset`` (4 KiB), or None without the magic."""
    sb = Sb1._make(SB1.unpack_from(block))
    if sb.magic != MD_MAGIC or sb.major != 1:
        return None
    version = {0: "1.1", 8: "1.2"}.get(sb.super_offset, "1.0")
    ok = sb.max_dev <= MAX_DEV and sb1_checksum(block) == sb.sb_csum
    roles = struct.unpack_from(f"<{min(sb.max_dev, MAX_DEV)}H", block, 256)
    role_id = roles[sb.dev_number] if sb.dev_number < len(roles) else 0xFFFF
    role = ROLE_NAMES.get(role_id, f"active device {role_id}")
    start = min(sb.data_offset * 512, member_size)
    length = min(sb.data_size * 512, member_size - start)
    name = sb.set_name.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    return MdSuper(version, offset, sb.level, name, _mdadm_uuid(sb.set_uuid), sb.raid_disks,
                   role, Extent(start, length), ok)  # fmt: skip


def parse_sb0(block: bytes, offset: int) -> MdSuper | None:
    """A version-0.90 superblock (little-endian) read at byte ``offset``, or None."""
    words = struct.unpack_from("<1024I", block)
    if words[0] != MD_MAGIC or words[1] != 0 or words[2] != 90:
        return None
    total = sum(words) - words[SB0_CSUM_WORD]
    uuid = ":".join(f"{w:08x}" for w in (words[5], words[13], words[14], words[15]))
    level = struct.unpack("<i", struct.pack("<I", words[7]))[0]
    raid_disk = words[SB0_THIS_DISK_WORD + 3]
    return MdSuper("0.90", offset, level, f"md{words[11]}", uuid, words[10],
                   f"active device {raid_disk}", Extent(0, offset),
                   _fold(total) == words[SB0_CSUM_WORD])  # fmt: skip


def find_super(src: ByteSource, head: bytes) -> tuple[int, MdSuper | None] | None:
    """(byte offset, superblock) of the first md magic of ``src`` at any of the four places
    versions put it; the superblock is None when the magic is there but the rest is not one
    clonebay reads. None when there is no magic at all."""
    end1 = (src.size - 8192) & ~4095
    end0 = (src.size & ~0xFFFF) - 0x10000
    magic: int | None = None
    for offset, version in ((0, 1), (4096, 1), (end1, 1), (end0, 0)):
        if offset < 0 or offset + SB0_BYTES > src.size:
            continue
        block = head[offset : offset + SB0_BYTES]
        if len(block) < SB0_BYTES:
            block = src.pread(SB0_BYTES, offset)
        if struct.unpack_from("<I", block)[0] != MD_MAGIC:
            continue
        found = parse_sb1(block, offset, src.size) if version else parse_sb0(block, offset)
        if found is not None:
            return offset, found
        magic = offset if magic is None else magic
    return None if magic is None else (magic, None)


def _where(sb: MdSuper) -> str:
    if sb.version in ("1.0", "0.90"):
        return f"superblock {sb.version} at the end"
    return f"superblock {sb.version} at byte {sb.offset}"


def _inside(src: ByteSource, sb: MdSuper, inner: Callable[[ByteSource], Volume]) -> str:
    """What the array's data in this RAID1 member holds ("" when nothing known or unreadable)."""
    if sb.data.length <= 0:
        return ""
    view = PiecedSource(src, (Piece(0, sb.data.start, sb.data.length),), f"{src.name}:md-data")
    try:
        found = inner(view)
    except InputError:
        return ""
    if found.fstype in ("unknown", "empty"):
        return ""
    return found.fstype + (f" {found.label!r}" if found.label else "")


def describe(sb: MdSuper, inside: str) -> str:
    """The reason a member is copied whole, in a technician's words."""
    array = f"array {sb.name}" if sb.name else "an array"
    head = (
        f"md {sb.level_name} member of {array} ({sb.raid_disks} devices; this is {sb.role};"
        f" {_where(sb)}; UUID {sb.uuid})"
    )
    if not sb.checksum_ok:
        return f"{head}: copied whole; the superblock's checksum is wrong"
    if sb.level != 1:
        return f"{head}: copied whole; one member of a striped array holds only part of the data"
    holds = f"the array's {inside}" if inside else "the array's data"
    if sb.data.start == 0:
        return (
            f"{head}: copied whole; {holds} starts at byte 0, so a tool that ignores md (a"
            " firmware, a boot loader, another system) sees it as a plain volume; the copy stays"
            " a member of the same array"
        )
    return f"{head}: copied whole; {holds} starts at byte {sb.data.start}"


def probe(src: ByteSource, head: bytes, inner: Callable[[ByteSource], Volume]) -> Volume | None:
    """A raw volume explaining the md member in ``src``, or None when it is not one."""
    found = find_super(src, head)
    if found is None:
        return None
    offset, sb = found
    if sb is None:
        reason = f"md RAID member (superblock magic at byte {offset}, the rest not understood)"
        return raw(src, reason, "", "")
    inside = _inside(src, sb, inner) if sb.level == 1 and sb.checksum_ok else ""
    return raw(src, describe(sb, inside), sb.name, sb.uuid)


def raw(src: ByteSource, reason: str, name: str, uuid: str) -> Volume:
    used = (Extent(0, src.size),) if src.size else ()
    return Volume("md-member", src.size, used, CopyMethod.RAW, VolumeState.UNKNOWN,
                  label=name, uuid=uuid, reason=reason)  # fmt: skip
