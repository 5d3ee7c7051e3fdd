"""NTFS hits, part one: the boot sector and the $MFT itself.

The boot sector locates everything; where it is unreadable, the backup in the volume's last
sector is used. $MFT's own clusters are named by the records they hold ("NTFS $MFT records
1234-1240"): a lost record takes its file's name, size and cluster list with it. Records 0-3
($MFT, $MFTMirr, $LogFile, $Volume) are mirrored in $MFTMirr; where $MFT's copy of one is
unreadable, the mirror's is read in its place, so that $MFT itself can still be followed.

Spec: Linux-NTFS "NTFS Documentation" ("$Boot", "$MFT", "$MFTMirr").
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from clonebay.errors import FilesystemError
from clonebay.fs.hits_base import HitBook, HitKind
from clonebay.fs.ntfs_layout import AT_BITMAP, OEM_ID, BootSector, parse_boot
from clonebay.fs.ntfs_mft import Mft, Stream, load_mft
from clonebay.model import Extent
from clonebay.system.blockdev import ByteSource

MFT = 0
MIRRORED = 4  # records 0-3 have a copy in $MFTMirr
FIRST_USER_RECORD = 16
SYSTEM_FILES = {
    0: ("$MFT", "the file table"),
    1: ("$MFTMirr", "a copy of the first MFT records: chkdsk rewrites it"),
    2: ("$LogFile", "the journal: chkdsk resets it, changes not yet written home are lost"),
    3: ("$Volume", "the volume's name and flags"),
    4: ("$AttrDef", "the attribute definitions"),
    6: ("$Bitmap", "the cluster allocation bitmap: chkdsk rebuilds it"),
    7: ("$Boot", "the boot code after the boot sector"),
    8: ("$BadClus", "clusters marked bad"),
    9: ("$Secure", "security descriptors: files may lose their permissions"),
    10: ("$UpCase", "the upper-case table names are compared with"),
    11: ("$Extend", "the directory of the newer system files"),
}


def claim_boot(src: ByteSource, book: HitBook) -> BootSector:
    """Parse the boot sector (its backup in the last sector if it is unreadable); claim both."""
    note = "the backup boot sector is intact (chkdsk or testdisk restore it)"
    where = 0
    if book.unreadable(0, 512):
        where = next(
            (
                src.size - size
                for size in (512, 4096)
                if src.size >= size
                and not book.unreadable(src.size - size, size)
                and src.pread(11, src.size - size)[3:11] == OEM_ID
            ),
            -1,
        )
        if where < 0:
            raise FilesystemError(
                f"{src.name}: the NTFS boot sector is unreadable and no backup was found in the"
                " last sector: the volume's layout is unknown"
            )
        note = "the backup boot sector in the last sector was used"
    boot = parse_boot(src.pread(512, where), f"{src.name}: boot sector at {where}")
    book.claim(HitKind.METADATA, "NTFS boot sector", 0, boot.sector_size, note)
    book.claim(HitKind.METADATA, "NTFS backup boot sector", boot.volume_bytes, boot.sector_size)
    if src.size - boot.sector_size > boot.volume_bytes:
        last = src.size - boot.sector_size
        book.claim(HitKind.METADATA, "NTFS backup boot sector (last sector)", last, 1 << 62)
    tail = boot.clusters * boot.cluster_size
    book.claim(HitKind.FREE, "sectors after the last cluster", tail, boot.volume_bytes - tail)
    past = boot.volume_bytes + boot.sector_size
    book.claim(HitKind.FREE, "space past the end of the NTFS volume", past, 1 << 62)
    return boot


class _Patched:
    """A ByteSource serving some byte ranges from elsewhere: the $MFTMirr's copies of
    records 0-3 where $MFT's own are unreadable."""

    def __init__(self, src: ByteSource, patches: list[tuple[int, int, int]]) -> None:
        self.src, self.patches = src, patches  # (target, origin, length)

    @property
    def size(self) -> int:
        return self.src.size

    @property
    def name(self) -> str:
        return self.src.name

    def pread(self, length: int, offset: int) -> bytes:
        data = bytearray(self.src.pread(length, offset))
        for target, origin, n in self.patches:
            start, end = max(offset, target), min(offset + length, target + n)
            if start < end:
                data[start - offset : end - offset] = self.src.pread(
                    end - start, origin + start - target
                )
        return bytes(data)


def load(src: ByteSource, boot: BootSector, book: HitBook) -> Mft:
    """$MFT, with records 0-3 from $MFTMirr where $MFT's own copies are unreadable."""
    size, cluster = boot.record_size, boot.cluster_size
    patches = []
    for k in range(MIRRORED):
        target, origin = boot.mft_lcn * cluster + k * size, boot.mftmirr_lcn * cluster + k * size
        if book.unreadable(target, size) and not book.unreadable(origin, size):
            patches.append((target, origin, size))
    mft = load_mft(_Patched(src, patches) if patches else src, boot)
    if patches:
        # Records 0-3 sit at the start of $MFT's first run, where the patches apply.
        first = mft.stream.runs[0]
        if first.lcn != boot.mft_lcn or first.length * cluster < MIRRORED * size:
            raise FilesystemError(f"{src.name}: $MFT's first run does not hold records 0-3")
    return mft


@dataclass(frozen=True)
class LostRecords:
    """The MFT records whose bytes are unreadable, as runs (first, last, volume offset)."""

    runs: tuple[tuple[int, int, int], ...]

    def contains(self, number: int) -> bool:
        i = bisect.bisect_right(self.runs, (number, 1 << 62, 0)) - 1
        return i >= 0 and number <= self.runs[i][1]

    def numbers(self) -> list[int]:
        return [n for first, last, _ in self.runs for n in range(first, last + 1)]

    def offset(self, number: int) -> int:
        """A volume byte of the run holding ``number`` (to order the report)."""
        i = bisect.bisect_right(self.runs, (number, 1 << 62, 0)) - 1
        return self.runs[max(i, 0)][2]

    def spans(self) -> str:
        return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b, _ in self.runs[:8])


def stream_extents(stream: Stream, cluster: int, offset: int, length: int) -> list[Extent]:
    """The volume bytes holding bytes ``[offset, offset + length)`` of a non-resident stream."""
    out = []
    for run in stream.runs:
        if run.lcn is None:
            continue
        start = max(offset, run.vcn * cluster)
        end = min(offset + length, (run.vcn + run.length) * cluster)
        if start < end:
            out.append(Extent(run.lcn * cluster + start - run.vcn * cluster, end - start))
    return out


def claim_mft(mft: Mft, book: HitBook) -> LostRecords:
    """Claim $MFT's unreadable clusters, named by the records they held."""
    cluster, size = mft.boot.cluster_size, mft.boot.record_size
    runs = []
    for run in mft.stream.runs:
        if run.lcn is None:
            continue
        for e in book.take(run.lcn * cluster, run.length * cluster):
            offset = run.vcn * cluster + e.start - run.lcn * cluster
            first, last = offset // size, (offset + e.length - 1) // size
            runs.append((first, last, e.start))
            name = (
                f"NTFS $MFT records {first}-{last}" if last > first else f"NTFS $MFT record {first}"
            )
            book.add(HitKind.METADATA, name, [e], at=e.start, note=_lost_note(mft, first, last))
    return LostRecords(tuple(sorted(runs)))


def _lost_note(mft: Mft, first: int, last: int) -> str:
    if first >= mft.record_count:
        return "past the records in use"
    system = [
        SYSTEM_FILES[n][0]
        for n in range(first, min(last + 1, FIRST_USER_RECORD))
        if n in SYSTEM_FILES
    ]
    note = "the files these records describe lose their names, sizes and cluster lists"
    if system:
        note = f"system files {', '.join(system)} among them; " + note
    return note


def in_use(mft: Mft, book: HitBook, lost: LostRecords) -> list[int]:
    """Lost records ($MFT's bitmap says) in use, all of them where that bitmap is unreadable;
    system records are left out (they are named already)."""
    cluster = mft.boot.cluster_size
    wanted = [n for n in lost.numbers() if FIRST_USER_RECORD <= n < mft.record_count]
    if not wanted:
        return []
    try:
        bitmap = mft.data(MFT, AT_BITMAP)
        lo, hi = wanted[0] // 8, wanted[-1] // 8 + 1
        if hi > bitmap.data_size or any(
            book.unreadable(x.start, x.length) for x in stream_extents(bitmap, cluster, lo, hi - lo)
        ):
            return wanted
        bits = bitmap.read(mft.src, cluster, lo, hi - lo)
    except FilesystemError:
        return wanted
    return [n for n in wanted if bits[n // 8 - lo] >> (n % 8) & 1]
