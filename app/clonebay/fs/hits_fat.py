"""FAT12/16/32: which files, directories and structures the unreadable ranges hit.

1. Fixed places: the boot sector (FAT32 keeps a backup at sector 6, used when the primary is
   unreadable), FSInfo, the other reserved sectors, each FAT copy ("FAT #1 sectors 40-47",
   with the clusters whose entries those sectors held) and FAT12/16's fixed root directory.
2. Free space: clusters whose entry is 0 (from any copy that is readable there), and clusters
   marked bad.
3. Owners: the directory tree is walked from the root; every file's and directory's cluster
   chain is followed (``hits_fat_table``) and compared with what is left, until nothing is.
   A cluster's place in its chain gives the file's lost byte range. Where a FAT entry is
   unreadable in every copy, chains through it break: the files whose rest cannot be located
   are reported (and then every chain has to be followed to find them).

Cost: the boot sector, the FAT windows the walk touches, and at worst every directory and
every chain (each contiguous stretch costs a comparison per 256 clusters), what fsck.fat reads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from clonebay.errors import FilesystemError
from clonebay.fs import fat
from clonebay.fs.hits_base import HitBook, HitKind, file_ranges
from clonebay.fs.hits_fat_table import MAX_DIR_BYTES, Table, entries
from clonebay.model import Extent
from clonebay.system.blockdev import ByteSource

BACKUP_BOOT_SECTORS = 3  # FAT32 backup: boot sector, FSInfo copy, a third sector
ROOT = "/"
FREE_NOTE = "no file uses these clusters (a copy of the used clusters does not need them)"
DIR_NOTE = "entries in the lost part are gone: the files they named are no longer listed"
BROKEN_NOTE = "its cluster chain breaks at a FAT entry no copy can tell: the rest cannot be located"


def find(src: ByteSource, book: HitBook) -> None:
    """Explain the unreadable bytes of the FAT volume ``src`` in ``book``."""
    geo, fsinfo, backup, note = _boot(src, book)
    _claim_reserved(geo, book, fsinfo, backup, note)
    broken = _claim_fats(geo, book)
    for e in book.take(geo.root_offset, geo.root_size):  # FAT12/16's fixed root directory
        inside = Extent(e.start - geo.root_offset, e.length)
        book.add(HitKind.DIRECTORY, ROOT, [inside], at=e.start, note=DIR_NOTE)
    table = Table(src, geo, book)
    doubtful = _claim_free(geo, table, book)
    walk = Walk(src, geo, table, book, everything=bool(broken))
    walk.run()
    _report_unknown(book, walk, doubtful, broken)


def _boot(src: ByteSource, book: HitBook) -> tuple[fat.Geometry, int, int, str]:
    """The geometry, FSInfo and backup sector numbers, and a note on where it came from."""
    where, note = 0, ""
    if book.unreadable(0, 512):
        for sector in (512, 1024, 2048, 4096):  # FAT32 keeps its backup at sector 6
            offset = 6 * sector
            if offset + 512 <= src.size and not book.unreadable(offset, 512):
                head = src.pread(512, offset)
                if fat.detect(head) and int.from_bytes(head[11:13], "little") == sector:
                    where, note = offset, "the backup boot sector at sector 6 was used"
                    break
        else:
            raise FilesystemError(
                f"{src.name}: the FAT boot sector is unreadable and no backup was found at"
                " sector 6 (FAT12/16 keep none): the volume's layout is unknown"
            )
    head = src.pread(512, where)
    geo = fat.parse_boot_sector(head, src.size, src.name)
    fsinfo = backup = 0
    if geo.fat_bits == 32:
        fields = fat.EXT32.unpack_from(head, 36)
        fsinfo, backup = fields[4], fields[5]
    return geo, fsinfo, backup, note


def _claim_reserved(geo: fat.Geometry, book: HitBook, fsinfo: int, backup: int, note: str) -> None:
    bps = geo.sector_size
    if not note:
        note = "the backup at sector 6 is intact" if backup else "FAT12/16 keep no backup of it"
    book.claim(HitKind.METADATA, "FAT boot sector", 0, bps, note)
    if fsinfo not in (0, 0xFFFF):
        book.claim(HitKind.METADATA, "FAT32 FSInfo sector", fsinfo * bps, bps, "free-count hints")
    if backup not in (0, 0xFFFF):
        size = BACKUP_BOOT_SECTORS * bps
        book.claim(HitKind.METADATA, "FAT32 backup boot sector", backup * bps, size)
    book.claim(HitKind.METADATA, "FAT reserved sectors", 0, geo.fat_offset)


def _claim_fats(geo: fat.Geometry, book: HitBook) -> list[tuple[int, int]]:
    """Claim each FAT copy's unreadable sectors; return the cluster spans no maintained copy
    can tell (their chains are broken)."""
    bits, bps = geo.fat_bits, geo.sector_size
    copies = (geo.root_offset - geo.fat_offset) // geo.fat_size
    broken: list[tuple[int, int]] = []
    for copy in range(copies):
        start = geo.fat_offset + copy * geo.fat_size
        for e in book.take(start, geo.fat_size):
            first = max(2, (e.start - start) * 8 // bits)
            last = min(geo.clusters + 1, ((e.end - start) * 8 - 1) // bits)
            low, high = (e.start - start) // bps, (e.end - 1 - start) // bps
            name = f"FAT #{copy + 1} " + (
                f"sectors {low}-{high}" if high > low else f"sector {low}"
            )
            note, lost = _fat_note(geo, book, copy, first, last)
            if lost:
                broken.append((first, last))
            book.add(HitKind.METADATA, name, [e], at=e.start, note=note)
    return broken


def _fat_note(
    geo: fat.Geometry, book: HitBook, copy: int, first: int, last: int
) -> tuple[str, bool]:
    """What a FAT copy's lost entries of clusters first-last mean; whether no maintained copy
    of them is readable."""
    if last < first:
        return "no cluster's entry lies there", False
    spans = f"the entries of clusters {first}-{last}"
    if copy not in geo.fat_copies:
        return f"{spans}; this copy is not maintained (mirroring is off)", False
    offset, length = fat.entry_bytes(geo, first, last + 1 - first)
    others = [
        c + 1
        for c in geo.fat_copies
        if c != copy and not book.unreadable(geo.fat_offset + c * geo.fat_size + offset, length)
    ]
    if others:
        return f"{spans}; FAT #{others[0]} holds a readable copy of them", False
    return f"{spans}; no copy of them is readable: chains through those clusters break", True


def _claim_free(geo: fat.Geometry, table: Table, book: HitBook) -> bool:
    """Claim free and bad-marked clusters; True when some entries could not be read."""
    cs = geo.cluster_size
    data_end = geo.data_offset + geo.clusters * cs
    book.claim(HitKind.FREE, "sectors after the last cluster", data_end, geo.size - data_end)
    book.claim(HitKind.FREE, "space past the end of the FAT volume", geo.size, 1 << 62)
    doubtful = False
    bad_mark = fat.BAD[geo.fat_bits]
    for e in book.pending:
        if e.end <= geo.data_offset:
            continue
        first = (max(e.start, geo.data_offset) - geo.data_offset) // cs + 2
        last = min(geo.clusters + 1, (e.end - 1 - geo.data_offset) // cs + 2)
        runs: list[tuple[int | None, int, int]] = []  # (entry value class, first, count)
        for cluster in range(first, last + 1):
            value = table.entry(cluster)
            kind = value if value in (None, 0, bad_mark) else -1
            if runs and runs[-1][0] == kind and runs[-1][1] + runs[-1][2] == cluster:
                runs[-1] = (kind, runs[-1][1], runs[-1][2] + 1)
            else:
                runs.append((kind, cluster, 1))
        for kind, cluster, count in runs:
            start = geo.data_offset + (cluster - 2) * cs
            if kind is None:
                doubtful = True
            elif kind == 0:
                book.claim(HitKind.FREE, "free space", start, count * cs, FREE_NOTE)
            elif kind == bad_mark:
                book.claim(HitKind.FREE, "clusters marked bad in the FAT", start, count * cs)
    return doubtful


class Walk:
    """The directory tree from the root, each chain claimed as it is met."""

    def __init__(
        self, src: ByteSource, geo: fat.Geometry, table: Table, book: HitBook, *, everything: bool
    ) -> None:
        self.src, self.geo, self.table, self.book = src, geo, table, book
        self.everything = everything  # walk every chain, even once nothing is pending
        self.unread_dirs: list[str] = []  # directories with unreadable clusters
        self.broken: dict[str, int] = {}  # path -> the unreadable FAT entry its chain breaks at

    def run(self) -> None:
        geo = self.geo
        queue: deque[tuple[str, int]] = deque([(ROOT, geo.root_cluster)])
        seen = {geo.root_cluster}
        while queue and (self.book.pending or self.everything):
            path, cluster = queue.popleft()
            for piece in self._directory(path, cluster):
                for entry in entries(piece, geo.fat_bits == 32):
                    child = path.rstrip("/") + "/" + entry.name
                    if entry.is_dir and entry.cluster >= 2 and entry.cluster not in seen:
                        seen.add(entry.cluster)
                        queue.append((child, entry.cluster))
                    elif not entry.is_dir and entry.cluster >= 2:
                        self._claim(child, entry.cluster, entry.size, HitKind.FILE)

    def _directory(self, path: str, cluster: int) -> Iterator[bytes]:
        """A directory's readable stretches (its chain claimed first); an unreadable piece is
        left out, so the entries after it are still seen."""
        geo = self.geo
        if cluster == 0:  # FAT12/16 fixed root, claimed with the layout
            pieces = [
                (geo.root_offset + k, geo.sector_size)
                for k in range(0, geo.root_size, geo.sector_size)
            ]
        else:
            runs = self._claim(path, cluster, MAX_DIR_BYTES, HitKind.DIRECTORY)
            cs = geo.cluster_size
            clusters = [c for _, first, count in runs for c in range(first, first + count)]
            pieces = [(geo.data_offset + (c - 2) * cs, cs) for c in clusters[: MAX_DIR_BYTES // cs]]
        readable: list[bytes] = []  # joined, as a long name may span two clusters
        for offset, length in pieces:
            if self.book.unreadable(offset, length):
                self.unread_dirs.append(path)
                yield b"".join(readable)
                readable = []
            else:
                readable.append(self.src.pread(length, offset))
        yield b"".join(readable)

    def _claim(
        self, path: str, cluster: int, size: int, kind: HitKind
    ) -> list[tuple[int, int, int]]:
        """Follow a chain, claiming its clusters for ``path``; the runs (index, first, count)."""
        geo, cs = self.geo, self.geo.cluster_size
        runs = list(self._chain(path, cluster))
        for index, first, count in runs:
            start = geo.data_offset + (first - 2) * cs
            got = self.book.take(start, count * cs)
            if got:
                ranges = file_ranges(got, start, index * cs, size)
                self.book.add(kind, path, ranges, at=got[0].start, note=_note(kind))
        if path in self.broken:
            reached = sum(count for _, _, count in runs) * cs
            rest = (
                [Extent(reached, size - reached)] if kind is HitKind.FILE and reached < size else []
            )
            if rest or kind is HitKind.DIRECTORY:
                where = self.broken[path]
                self.book.add(kind, path, rest, at=where, note=BROKEN_NOTE)
        return runs

    def _chain(self, path: str, cluster: int) -> Iterator[tuple[int, int, int]]:
        """(index in the chain, first cluster, count) of each contiguous run."""
        table, index = self.table, 0
        end_marks = fat.BAD[self.geo.fat_bits] + 1
        while 2 <= cluster < table.end and index <= self.geo.clusters:
            end = table.run_end(cluster)
            yield index, cluster, end - cluster
            index += end - cluster
            value = table.entry(end - 1)
            if value is None:
                offset, _ = fat.entry_bytes(self.geo, end - 1, 1)
                self.broken[path] = self.geo.fat_offset + offset
                return
            if value >= end_marks or value < 2:
                return
            cluster = value


def _note(kind: HitKind) -> str:
    return DIR_NOTE if kind is HitKind.DIRECTORY else ""


def _report_unknown(
    book: HitBook, walk: Walk, doubtful: bool, broken: list[tuple[int, int]]
) -> None:
    reasons = []
    if walk.unread_dirs:
        named = ", ".join(sorted(set(walk.unread_dirs))[:8])
        reasons.append(f"they may belong to a file listed in the unreadable part of {named}")
    if broken:
        reasons.append("they may lie on a chain through FAT entries no copy can tell")
    if doubtful:
        reasons.append("the FAT entries for them are unreadable in every copy: they may be free")
    if not reasons:
        reasons.append("marked in use in the FAT, but no file's chain reaches them (lost chains)")
    for e in book.pending:
        book.claim(
            HitKind.UNKNOWN, "clusters of unknown owner", e.start, e.length, "; ".join(reasons)
        )
