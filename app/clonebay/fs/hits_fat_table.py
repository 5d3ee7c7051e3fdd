"""FAT hits: the allocation table as the copy still tells it, and directory entries.

Every FAT copy holds the same entries; where the first maintained copy's bytes are unreadable,
an entry is taken from another copy, and only where every copy is unreadable is it unknown.
Entries are decoded a window of 65,536 at a time into 32-bit lanes (``fat.entry_lanes``) and
kept in a small cache, so a FAT32 of 256 MiB costs only the windows a walk touches. A chain's
contiguous stretches (entry ``c`` holding ``c + 1``) are found by comparing a window's lanes
with the expected run, 256 entries per comparison, so a large unfragmented file costs a few
comparisons, not one step per cluster.

Directory entries (fatgen103 section 6): 32 bytes each, an 8.3 name, attributes, the first
cluster (high half at 20 on FAT32, low half at 26), the size; a long name is spread over the
entries just before, in reverse order, each carrying the short name's checksum.
"""

from __future__ import annotations

import array
import struct
from collections import OrderedDict
from collections.abc import Iterator
from typing import NamedTuple

from clonebay.fs import extents, fat
from clonebay.fs.hits_base import HitBook
from clonebay.model import Extent
from clonebay.system.blockdev import ByteSource

WINDOW = fat.WINDOW  # entries decoded at a time
CACHED_WINDOWS = 16  # 4 MiB of lanes
STRIDE = 256  # entries compared at a time when following a contiguous run
MAX_DIR_BYTES = 65536 * fat.DIR_ENTRY  # fatgen103: at most 65,536 entries in a directory
ATTR_HIDDEN_NAME_MASK = 0x3F
LFN_LAST = 0x40
DELETED, END = 0xE5, 0x00
LOWER_BASE, LOWER_EXT = 0x08, 0x10  # NT case flags (byte 12): show that part in lower case
DIRENT = struct.Struct("<11sB8xH4xHI")  # name, attributes, first cluster high/low, size


class Table:
    """The effective FAT: entries from any copy whose bytes are readable."""

    def __init__(self, src: ByteSource, geo: fat.Geometry, book: HitBook) -> None:
        self.src, self.geo, self.book = src, geo, book
        self.end = geo.clusters + 2  # entries 0 .. end - 1
        self._windows: OrderedDict[int, tuple[bytes, set[int]]] = OrderedDict()

    def _window(self, index: int) -> tuple[bytes, set[int]]:
        """(lanes, entries no copy can tell) of window ``index``."""
        if index in self._windows:
            self._windows.move_to_end(index)
            return self._windows[index]
        geo = self.geo
        first = index * WINDOW
        count = min(WINDOW, self.end - first)
        offset, length = fat.entry_bytes(geo, first, count)
        lanes = bytearray(4 * count)
        unknown = set(range(first, first + count))
        for copy in geo.fat_copies:
            if not unknown:
                break
            table = geo.fat_offset + copy * geo.fat_size
            decoded = fat.entry_lanes(self.src.pread(length, table + offset), geo.fat_bits, count)
            usable = unknown - self._holes(table, table + offset, length)
            if len(usable) == count:
                lanes[:] = decoded
            for c in usable if len(usable) < count else ():
                i = 4 * (c - first)
                lanes[i : i + 4] = decoded[i : i + 4]
            unknown -= usable
        self._windows[index] = (bytes(lanes), unknown)
        if len(self._windows) > CACHED_WINDOWS:
            self._windows.popitem(last=False)
        return self._windows[index]

    def _holes(self, table: int, start: int, length: int) -> set[int]:
        """Entries of the FAT copy at byte ``table`` with unreadable bytes in the span."""
        bits = self.geo.fat_bits
        holes: set[int] = set()
        for e in extents.intersect(self.book.bad, (Extent(start, length),)):
            first = (e.start - table) * 8 // bits
            last = ((e.end - table) * 8 - 1) // bits
            holes.update(range(first, last + 1))
        return holes

    def entry(self, cluster: int) -> int | None:
        """The entry of ``cluster`` (FAT32: 28 bits), or None where no copy is readable."""
        lanes, unknown = self._window(cluster // WINDOW)
        if cluster in unknown:
            return None
        i = cluster % WINDOW
        return int.from_bytes(lanes[4 * i : 4 * i + 4], "little")

    def run_end(self, cluster: int) -> int:
        """One past the last cluster of the contiguous run from ``cluster`` (each entry of the
        run links to the next cluster)."""
        pos = cluster
        while pos + 1 < self.end:
            lanes, _ = self._window(pos // WINDOW)
            i = pos % WINDOW
            n = min(STRIDE, len(lanes) // 4 - i, self.end - 1 - pos)
            if (
                lanes[4 * i : 4 * (i + n)]
                != array.array("I", range(pos + 1, pos + 1 + n)).tobytes()
            ):
                for k in range(n):
                    if lanes[4 * (i + k) : 4 * (i + k + 1)] != (pos + k + 1).to_bytes(4, "little"):
                        return pos + k + 1
            pos += n
        return pos + 1


class Entry(NamedTuple):
    """A live directory entry: its name, whether it is a directory, first cluster, size."""

    name: str
    is_dir: bool
    cluster: int
    size: int


def _checksum(short: bytes) -> int:
    total = 0
    for byte in short:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total


def _short_name(raw: bytes, case: int) -> str:
    base = raw[:8].rstrip(b" ").decode("cp437")
    ext = raw[8:11].rstrip(b" ").decode("cp437")
    if raw[:1] == b"\x05":
        base = "\u03c3" + base[1:]  # 0x05 stands for a leading 0xE5 (cp437 sigma)
    base = base.lower() if case & LOWER_BASE else base
    ext = ext.lower() if case & LOWER_EXT else ext
    return f"{base}.{ext}" if ext else base


def entries(data: bytes, fat32: bool) -> Iterator[Entry]:
    """The live entries of directory bytes ``data`` (long names joined; "." and ".." and the
    volume label left out); ends at the first never-used entry."""
    parts: dict[int, bytes] = {}
    checksum = -1
    for pos in range(0, len(data) - fat.DIR_ENTRY + 1, fat.DIR_ENTRY):
        raw = data[pos : pos + fat.DIR_ENTRY]
        if raw[0] == END:
            return
        attr = raw[11]
        if raw[0] == DELETED:
            parts.clear()
            continue
        if attr & fat.ATTR_LONG_NAME == fat.ATTR_LONG_NAME:
            if raw[0] & LFN_LAST:
                parts.clear()
                checksum = raw[13]
            parts[raw[0] & ATTR_HIDDEN_NAME_MASK] = raw[1:11] + raw[14:26] + raw[28:32]
            continue
        short, _, high, low, size = DIRENT.unpack(raw)
        long_name = b"".join(parts[k] for k in sorted(parts))
        parts.clear()
        if attr & fat.ATTR_VOLUME_ID or short in (b".          ", b"..         "):
            continue
        name = _short_name(short, raw[12])
        if long_name and checksum == _checksum(short):
            text = long_name.decode("utf-16-le", "replace")
            name = text.split("\0", 1)[0]
        cluster = (high << 16 if fat32 else 0) | low
        yield Entry(name, bool(attr & fat.ATTR_DIRECTORY), cluster, size)
