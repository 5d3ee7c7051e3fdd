"""FAT12, FAT16 and FAT32: boot sector, File Allocation Table, and the clusters in use.

A FAT volume is four regions laid end to end (Microsoft "FAT: General Overview of On-Disk Format",
fatgen103, section 3): the reserved sectors (boot sector with the BIOS Parameter Block, and for
FAT32 the FSInfo sector and a backup boot sector), ``NumFATs`` copies of the File Allocation
Table, for FAT12/16 a fixed root directory, and the data region cut into clusters numbered from 2.
The FAT holds one entry per cluster: 0 is free, anything else is in use (a link to the next
cluster, end of chain, or the bad-cluster mark). So the bytes a copy must carry are everything
before the data region plus every cluster whose entry is non-zero.

Choices made here:

* The FAT type is decided by the cluster count, as the spec, Windows and Linux do (below 4085
  clusters FAT12, below 65525 FAT16, else FAT32), never by the ``FilSysType`` string. A BPB whose
  layout (FAT32 has ``BPB_FATSz16 == 0``) disagrees with its cluster count is refused: Windows and
  Linux would read such a volume differently, so no single map is right.
* Clusters marked bad are not copied: the medium failed there, the filesystem never reads them,
  and the FAT copied with the volume keeps them marked. They are counted in ``notes``.
* Every FAT copy is read. If the copies differ, the map is the union of what any copy marks in
  use, and a note says so. With FAT32 mirroring disabled (``BPB_ExtFlags`` bit 7) only the active
  copy is maintained, so only it counts.
* Entries that link to a cluster past the end of the volume, the value 1, or the reserved values
  just below the bad mark, mean the table is damaged: FilesystemError, and the volume is copied raw.
* The data region may end a few sectors before the volume does (sectors too few for a cluster);
  no structure lives there, so those sectors are not copied.

The FAT is decoded a window of clusters at a time into 32-bit lanes of one big Python integer
and classified with SWAR arithmetic (see ``_Classifier``): a handful of C-speed integer
operations per window instead of a Python loop per entry. Free stretches are skipped with one
byte count. On this project's 2-core VM an 8 GiB FAT32 (2 million clusters) maps in 0.03 s and
a full 32 GiB FAT32 with 512-byte clusters (66 million, 256 MiB per FAT) in under 3 s.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from clonebay.errors import FilesystemError
from clonebay.fs import extents
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import ByteSource

# fatgen103 section 3.1, "Boot Sector and BPB Structure", offsets 0..35, little-endian:
# BS_jmpBoot, BS_OEMName, BPB_BytsPerSec, BPB_SecPerClus, BPB_RsvdSecCnt, BPB_NumFATs,
# BPB_RootEntCnt, BPB_TotSec16, BPB_Media, BPB_FATSz16, BPB_SecPerTrk, BPB_NumHeads,
# BPB_HiddSec, BPB_TotSec32.
BPB = struct.Struct("<3s8sHBHBHHBHHHII")
# fatgen103 section 3.2, FAT12/16 from offset 36: BS_DrvNum, BS_Reserved1 (Windows NT and Linux
# keep the "volume dirty" flag in bit 0), BS_BootSig, BS_VolID, BS_VolLab, BS_FilSysType.
EXT16 = struct.Struct("<BBBI11s8s")
# fatgen103 section 3.3, FAT32 from offset 36: BPB_FATSz32, BPB_ExtFlags, BPB_FSVer,
# BPB_RootClus, BPB_FSInfo, BPB_BkBootSec, BPB_Reserved, then BS_DrvNum .. BS_FilSysType as above.
EXT32 = struct.Struct("<IHHIHH12sBBBI11s8s")

FAT12_MAX_CLUSTERS = 4084  # fatgen103 section 3.5: fewer than 4085 clusters is FAT12
FAT16_MAX_CLUSTERS = 65524  # fewer than 65525 is FAT16
FAT32_MAX_CLUSTERS = 0x0FFFFFF5  # cluster numbers must stay below the reserved values
# The bad-cluster mark per type; values above it mark the end of a chain.
BAD = {12: 0xFF7, 16: 0xFFF7, 32: 0x0FFFFFF7}
# fatgen103 section 4: FAT[1] high bits. ClnShutBitMask clear: not cleanly unmounted;
# HrdErrBitMask clear: the driver met disk I/O errors on this volume.
CLEAN_SHUTDOWN = {16: 0x8000, 32: 0x08000000}
NO_IO_ERRORS = {16: 0x4000, 32: 0x04000000}
EXT_BOOT_SIGNATURES = (0x28, 0x29)  # 0x29: serial, label and type follow; 0x28: serial only
FOREIGN_OEM_IDS = (b"NTFS    ", b"EXFAT   ", b"-FVE-FS-")  # NTFS, exFAT, BitLocker
WINDOW = 1 << 16  # clusters per step: 256 KiB of lanes stays in cache (1.3x faster than 4 MiB)
DIR_ENTRY = 32
ATTR_VOLUME_ID, ATTR_DIRECTORY, ATTR_LONG_NAME = 0x08, 0x10, 0x0F
LABEL_SCAN_LIMIT = 1 << 20  # bytes of root directory searched for the volume label entry


@dataclass(frozen=True)
class Geometry:
    """The validated numbers of a FAT volume's boot sector (all offsets in bytes)."""

    fat_bits: int
    sector_size: int
    cluster_size: int
    clusters: int
    fat_offset: int  # start of the first FAT
    fat_size: int  # bytes per FAT copy
    fat_copies: tuple[int, ...]  # indexes of the FAT copies that are maintained
    root_offset: int  # FAT12/16 fixed root directory
    root_size: int
    data_offset: int  # cluster 2 starts here
    size: int  # bytes the filesystem spans
    root_cluster: int  # FAT32 root directory's first cluster (0 for FAT12/16)
    boot_dirty: bool  # BS_Reserved1 bit 0
    serial: int | None
    label: str


def detect(head: bytes) -> bool:
    """A FAT boot sector: 0x55AA, a jump, a plausible BPB, and no NTFS/exFAT/BitLocker OEM id."""
    if len(head) < 512 or head[510:512] != b"\x55\xaa" or head[0] not in (0xEB, 0xE9):
        return False
    _jump, oem, bps, spc, reserved, nfats, *_rest = BPB.unpack_from(head)
    return (
        oem not in FOREIGN_OEM_IDS
        and bps in (512, 1024, 2048, 4096)
        and spc in (1, 2, 4, 8, 16, 32, 64, 128)
        and reserved >= 1
        and 1 <= nfats <= 4
    )


def _text(raw: bytes) -> str:
    """An 8.3-style space-padded name in the DOS code page; "NO NAME" means none."""
    if raw[:1] == b"\x05":  # fatgen103 section 6: 0x05 stands for a leading 0xE5
        raw = b"\xe5" + raw[1:]
    text = raw.rstrip(b" \x00").decode("cp437")
    return "" if text == "NO NAME" else text


def parse_boot_sector(sector: bytes, volume_size: int, name: str) -> Geometry:
    """Validate the BPB of ``sector`` against a volume of ``volume_size`` bytes."""
    if not detect(sector):
        raise FilesystemError(f"{name}: no FAT boot sector at offset 0")
    (_j, _oem, bps, spc, reserved, nfats, root_entries, tot16, media, fat16, *_r, tot32) = (
        BPB.unpack_from(sector)
    )
    fat32_layout = fat16 == 0
    if fat32_layout:
        (fat_sectors, ext_flags, version, root_cluster, fsinfo, backup, _res, _drv, state, sig,
         serial, label, _type) = EXT32.unpack_from(sector, 36)  # fmt: skip
    else:
        _drv, state, sig, serial, label, _type = EXT16.unpack_from(sector, 36)
        fat_sectors, ext_flags, version, root_cluster, fsinfo, backup = fat16, 0, 0, 0, 0, 0
    where = f"{name}: FAT boot sector at offset 0"
    total = tot16 or tot32
    root_sectors = (root_entries * DIR_ENTRY + bps - 1) // bps
    data_sector = reserved + nfats * fat_sectors + root_sectors
    if media != 0xF0 and media < 0xF8:
        raise FilesystemError(f"{where}: media byte 0x{media:02x} is not a FAT media type")
    if fat_sectors == 0 or total == 0:
        raise FilesystemError(f"{where}: zero sectors per FAT or zero total sectors")
    if data_sector >= total:
        raise FilesystemError(f"{where}: the data region starts past the end of the volume")
    clusters = (total - data_sector) // spc
    if clusters == 0:
        raise FilesystemError(f"{where}: the data region is smaller than one cluster")
    fat_bits = (
        12 if clusters <= FAT12_MAX_CLUSTERS else 16 if clusters <= FAT16_MAX_CLUSTERS else 32
    )
    if (fat_bits == 32) != fat32_layout:
        raise FilesystemError(
            f"{where}: {clusters} clusters call for FAT{fat_bits} but the BPB is laid out for"
            f" FAT{'32' if fat32_layout else '12/16'}; Windows and Linux disagree on such a volume"
        )
    if (root_entries == 0) != (fat_bits == 32):
        raise FilesystemError(f"{where}: {root_entries} root entries do not fit FAT{fat_bits}")
    if clusters > FAT32_MAX_CLUSTERS:
        raise FilesystemError(f"{where}: {clusters} clusters is more than FAT32 can number")
    if fat_sectors * bps * 8 < (clusters + 2) * fat_bits:
        raise FilesystemError(
            f"{where}: a FAT of {fat_sectors} sectors cannot hold {clusters} cluster entries"
        )
    if total * bps > volume_size:
        raise FilesystemError(
            f"{where}: the filesystem spans {total * bps} bytes but the volume has only"
            f" {volume_size} (truncated partition or image)"
        )
    copies = tuple(range(nfats))
    if fat_bits == 32:
        if version != 0:
            raise FilesystemError(f"{where}: unknown FAT32 version {version >> 8}.{version & 255}")
        if not 2 <= root_cluster < clusters + 2:
            raise FilesystemError(f"{where}: root directory cluster {root_cluster} out of range")
        for what, sector_no in (("FSInfo", fsinfo), ("backup boot", backup)):
            if sector_no not in (0, 0xFFFF) and sector_no >= reserved:
                raise FilesystemError(f"{where}: {what} sector {sector_no} outside reserved area")
        if ext_flags & 0x80:  # mirroring disabled: only the active FAT is maintained
            if ext_flags & 0x0F >= nfats:
                raise FilesystemError(f"{where}: active FAT {ext_flags & 0x0F} does not exist")
            copies = (ext_flags & 0x0F,)
    return Geometry(
        fat_bits=fat_bits,
        sector_size=bps,
        cluster_size=bps * spc,
        clusters=clusters,
        fat_offset=reserved * bps,
        fat_size=fat_sectors * bps,
        fat_copies=copies,
        root_offset=(reserved + nfats * fat_sectors) * bps,
        root_size=root_sectors * bps,
        data_offset=data_sector * bps,
        size=total * bps,
        root_cluster=root_cluster,
        boot_dirty=sig in EXT_BOOT_SIGNATURES and bool(state & 1),
        serial=serial if sig in EXT_BOOT_SIGNATURES else None,
        label=_text(label) if sig == 0x29 else "",
    )


def entry_lanes(raw: bytes, fat_bits: int, count: int) -> bytes:
    """``count`` FAT entries from ``raw`` as 32-bit little-endian lanes, FAT32 masked to 28 bits."""
    if fat_bits == 32:
        lanes = bytearray(raw[: 4 * count])
        lanes[3::4] = lanes[3::4].translate(_LOW_NIBBLE)  # the top 4 bits are reserved
        return bytes(lanes)
    lanes = bytearray(4 * count)
    if fat_bits == 16:
        lanes[0::4] = raw[0 : 2 * count : 2]
        lanes[1::4] = raw[1 : 2 * count : 2]
        return bytes(lanes)
    # FAT12 packs two entries in three bytes; at most 4086 entries, so a plain loop is fine.
    for i in range(count):
        pair = raw[i * 3 // 2] | raw[i * 3 // 2 + 1] << 8
        value = pair >> 4 if i & 1 else pair & 0xFFF
        lanes[4 * i : 4 * i + 2] = value.to_bytes(2, "little")
    return bytes(lanes)


_LOW_NIBBLE = bytes(b & 0x0F for b in range(256))


class _Classifier:
    """Classifies windows of FAT entries held as 32-bit lanes of one big integer (SWAR).

    ``ge(t)`` adds ``2**28 - t`` to every lane: a lane's bit 28 is then set exactly when its
    value (always below 2**28) was at least ``t``, and the sum stays below 2**29, so no carry
    crosses into the next lane. The per-lane constants are cached per window size.
    """

    def __init__(self, geo: Geometry, name: str) -> None:
        self.geo, self.name = geo, name
        self.bad_value = BAD[geo.fat_bits]
        self._cache: dict[tuple[int, int], int] = {}

    def _constant(self, count: int, lane_value: int) -> int:
        key = (count, lane_value)
        if key not in self._cache:
            self._cache[key] = int.from_bytes(lane_value.to_bytes(4, "little") * count, "little")
        return self._cache[key]

    def _ge(self, lanes: int, count: int, threshold: int) -> int:
        raised = lanes + self._constant(count, (1 << 28) - threshold)
        return (raised >> 28) & self._constant(count, 1)

    def classify(self, raw: bytes, first: int, count: int) -> tuple[int, int]:
        """(in-use lanes, bad-lane count) for entries ``first .. first + count``."""
        if raw.count(0) == len(raw):  # an all-free stretch: nothing to check
            return 0, 0
        packed = entry_lanes(raw, self.geo.fat_bits, count)
        lanes = int.from_bytes(packed, "little")
        nonzero = self._ge(lanes, count, 1)
        at_bad = self._ge(lanes, count, self.bad_value)
        # Invalid: a link past the last cluster that is not the bad or an end mark (this takes
        # in the reserved values 0x?FF0..0x?FF6 unless they number a real cluster), or 1.
        invalid = self._ge(lanes, count, self.geo.clusters + 2) ^ at_bad
        # A byte search rules out the rare values in C before any lane-wise test.
        if b"\x01\x00\x00\x00" in packed:
            invalid |= nonzero ^ self._ge(lanes, count, 2)
        if invalid:
            self._refuse(packed, first, ((invalid & -invalid).bit_length() - 1) // 32)
        bad = 0
        if self.bad_value.to_bytes(4, "little") in packed:
            bad = at_bad ^ self._ge(lanes, count, self.bad_value + 1)
        return nonzero & ~bad, bad.bit_count()

    def _refuse(self, packed: bytes, first: int, lane: int) -> None:
        value = int.from_bytes(packed[4 * lane : 4 * lane + 4], "little")
        raise FilesystemError(
            f"{self.name}: FAT{self.geo.fat_bits} entry for cluster {first + lane} holds"
            f" 0x{value:x}, which is neither free, a cluster of this volume"
            f" (2..{self.geo.clusters + 1}) nor an end mark; the allocation table is damaged"
        )


@dataclass
class _Scan:
    used: list[tuple[int, int]]  # runs of cluster numbers [first, end)
    bad: int
    copies_differ: bool


def entry_bytes(geo: Geometry, first: int, count: int) -> tuple[int, int]:
    """(offset inside a FAT, length) of the bytes holding entries ``first .. first + count``."""
    start = first * geo.fat_bits // 8
    return start, ((first + count) * geo.fat_bits + 7) // 8 - start


def _runs(flags: bytes, first: int) -> Iterator[tuple[int, int]]:
    """[start, end) runs of non-zero bytes in ``flags``, numbered from ``first``."""
    pos = flags.find(1)
    while pos >= 0:
        end = flags.find(0, pos)
        end = len(flags) if end < 0 else end
        yield first + pos, first + end
        pos = flags.find(1, end)


def scan_fat(src: ByteSource, geo: Geometry) -> _Scan:
    """Read every maintained FAT copy and return the runs of clusters in use."""
    scan = _Scan([], 0, False)
    classifier = _Classifier(geo, src.name)
    end = geo.clusters + 2
    for first in range(2, end, WINDOW):  # WINDOW is even, so FAT12 windows start on a byte
        count = min(WINDOW, end - first)
        offset, length = entry_bytes(geo, first, count)
        raws = [
            src.pread(length, geo.fat_offset + c * geo.fat_size + offset) for c in geo.fat_copies
        ]
        used, bad = classifier.classify(raws[0], first, count)
        scan.bad += bad
        for other in raws[1:]:
            if other != raws[0]:
                scan.copies_differ = True
                used |= classifier.classify(other, first, count)[0]
        if used:
            scan.used.extend(_runs(used.to_bytes(4 * count, "little")[0::4], first))
    return scan


def read_entry(src: ByteSource, geo: Geometry, cluster: int) -> int:
    """The raw value of one entry of the first maintained FAT copy (FAT32 not masked)."""
    offset, length = entry_bytes(geo, cluster, 1)
    raw = src.pread(length, geo.fat_offset + geo.fat_copies[0] * geo.fat_size + offset)
    value = int.from_bytes(raw, "little")
    if geo.fat_bits == 12:
        return value >> 4 if cluster & 1 else value & 0xFFF
    return value


def root_label(src: ByteSource, geo: Geometry) -> str | None:
    """The label in the root directory's volume-ID entry (what blkid shows), or None."""
    if geo.fat_bits == 32:
        # Only the first cluster of the root chain: mkfs and mlabel put the label entry there.
        start, size = geo.data_offset + (geo.root_cluster - 2) * geo.cluster_size, geo.cluster_size
    else:
        start, size = geo.root_offset, geo.root_size
    data = src.pread(min(size, LABEL_SCAN_LIMIT), start)
    for pos in range(0, len(data) - DIR_ENTRY + 1, DIR_ENTRY):
        first, attr = data[pos], data[pos + 11]
        if first == 0:
            break
        if first == 0xE5 or attr & ATTR_LONG_NAME == ATTR_LONG_NAME:
            continue
        if attr & (ATTR_VOLUME_ID | ATTR_DIRECTORY) == ATTR_VOLUME_ID:
            return _text(data[pos : pos + 11])
    return None


def probe(src: ByteSource) -> Volume:
    """Parse a FAT12/16/32 volume and map its reserved area, FATs, root directory and clusters."""
    if src.size < 512:
        raise FilesystemError(f"{src.name}: {src.size} bytes is too small for a FAT volume")
    geo = parse_boot_sector(src.pread(512, 0), src.size, src.name)
    notes: list[str] = []
    if geo.fat_bits == 32:
        root = read_entry(src, geo, geo.root_cluster) & 0x0FFFFFFF
        if root in (0, BAD[32]):
            raise FilesystemError(
                f"{src.name}: FAT32 root directory cluster {geo.root_cluster} is marked"
                f" {'free' if root == 0 else 'bad'} in the FAT"
            )
    scan = scan_fat(src, geo)
    runs = [Extent(0, geo.data_offset)]  # reserved sectors, every FAT copy, FAT12/16 root dir
    runs += [
        Extent(geo.data_offset + (a - 2) * geo.cluster_size, (b - a) * geo.cluster_size)
        for a, b in scan.used
    ]
    dirty = geo.boot_dirty
    if geo.fat_bits in CLEAN_SHUTDOWN:
        flags = read_entry(src, geo, 1)
        dirty |= not flags & CLEAN_SHUTDOWN[geo.fat_bits]
        if not flags & NO_IO_ERRORS[geo.fat_bits]:
            notes.append("the FAT records disk I/O errors on this volume (hard-error bit)")
    if dirty:
        notes.append("FAT volume not cleanly unmounted (dirty bit set); copied as it is")
    if scan.bad:
        notes.append(f"{scan.bad} clusters marked bad in the FAT are not copied")
    if scan.copies_differ:
        notes.append("the FAT copies differ; every cluster any copy marks in use is copied")
    label = root_label(src, geo)
    serial = geo.serial
    return Volume(
        fstype=f"fat{geo.fat_bits}",
        size=geo.size,
        used=extents.clip(extents.normalize(runs), src.size),
        copy=CopyMethod.NATIVE,
        state=VolumeState.DIRTY if dirty else VolumeState.CLEAN,
        label=geo.label if label is None else label,
        uuid="" if serial is None else f"{serial >> 16:04X}-{serial & 0xFFFF:04X}",
        block_size=geo.cluster_size,
        notes=tuple(notes),
    )
