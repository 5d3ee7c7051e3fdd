"""A read-only FAT12/16/32 driver for the browse view, on a partition file.

The live kernel has no vfat module and fusefat (0.1a) lists folders as empty files, so FAT
volumes are read here. The layout is Microsoft's fatgen103: the boot sector (parsed by
fs/fat.py), the FAT (one entry per cluster: the next cluster of the chain), and folders of
32-byte entries. A folder entry holds an 8.3 name (with the NT lower-case flags of byte 12),
attributes, the first cluster and the size; the long name (VFAT) precedes it as LFN entries
(attribute 0x0F) of 13 UTF-16 characters each, last piece first, each carrying a checksum of
the 8.3 name so that orphaned pieces are ignored.

Times are as Linux's vfat shows them: the modification date and time (2 s steps) in local time
as st_mtime and st_ctime, the last-access date as st_atime. Modes are 0755 for folders, 0644
for files, without the write bits when the read-only attribute is set. mtools (``mcopy -m``)
reads the same times: the tests use it as the oracle.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import mfusepy

from clonebay.errors import FilesystemError
from clonebay.fs.fat import BAD, Geometry, parse_boot_sector

ENTRY = 32
ATTR_READ_ONLY, ATTR_VOLUME_ID, ATTR_DIRECTORY, ATTR_LFN = 0x01, 0x08, 0x10, 0x0F
LOWER_BASE, LOWER_EXT = 0x08, 0x10  # byte 12 (NT): the 8.3 base / extension is lower case
# fatgen103 section 6, folder entry from offset 18: DIR_LstAccDate, DIR_FstClusHI, DIR_WrtTime,
# DIR_WrtDate, DIR_FstClusLO, DIR_FileSize.
DIR_TAIL = struct.Struct("<HHHHHI")
MAX_CHAIN = 1 << 28  # longer than any FAT32 chain: a loop in the FAT ends the walk


@dataclass(frozen=True)
class Node:
    """One file or folder: what the folder entry says."""

    name: str
    attr: int
    cluster: int
    size: int
    mtime: float
    atime: float
    inode: int

    @property
    def is_dir(self) -> bool:
        return bool(self.attr & ATTR_DIRECTORY)

    def attrs(self) -> dict[str, Any]:
        if self.is_dir:
            mode = stat.S_IFDIR | 0o755
        else:
            mode = stat.S_IFREG | (0o444 if self.attr & ATTR_READ_ONLY else 0o644)
        ns = int(self.mtime * 1e9)
        return {
            "st_mode": mode,
            "st_nlink": 2 if self.is_dir else 1,
            "st_size": self.size,
            "st_mtime": ns,
            "st_ctime": ns,
            "st_atime": int(self.atime * 1e9),
            "st_ino": self.inode,
            "st_blocks": (self.size + 511) // 512,
        }


def dos_time(date: int, clock: int = 0) -> float:
    """A FAT date and time (local time, 2 s steps) as seconds since the epoch; 0 for none."""
    if date == 0:
        return 0.0
    parts = (
        1980 + (date >> 9), (date >> 5) & 15, date & 31,
        clock >> 11, (clock >> 5) & 63, (clock & 31) * 2, 0, 0, -1,
    )  # fmt: skip
    try:
        return time.mktime(parts)
    except (OverflowError, ValueError):
        return 0.0


def short_name(raw: bytes, flags: int) -> str:
    """The 8.3 name of an entry (0x05 stands for a leading 0xE5; NT case flags applied)."""
    if raw[:1] == b"\x05":
        raw = b"\xe5" + raw[1:]
    base = raw[:8].rstrip(b" ").decode("cp437")
    ext = raw[8:11].rstrip(b" ").decode("cp437")
    if flags & LOWER_BASE:
        base = base.lower()
    if flags & LOWER_EXT:
        ext = ext.lower()
    return f"{base}.{ext}" if ext else base


def lfn_checksum(raw: bytes) -> int:
    total = 0
    for byte in raw[:11]:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total


def parse_folder(data: bytes, first_inode: int) -> list[Node]:
    """Every live entry of a folder's bytes (no '.', '..', labels or deleted entries)."""
    nodes: list[Node] = []
    pieces: dict[int, str] = {}
    checksum = -1
    for pos in range(0, len(data) - ENTRY + 1, ENTRY):
        entry = data[pos : pos + ENTRY]
        if entry[0] == 0:
            break
        attr = entry[11]
        if entry[0] == 0xE5:
            pieces.clear()
            continue
        if attr & 0x3F == ATTR_LFN:
            order = entry[0] & 0x1F
            if entry[0] & 0x40:
                pieces.clear()
                checksum = entry[13]
            if entry[13] == checksum:
                chars = entry[1:11] + entry[14:26] + entry[28:32]
                pieces[order] = chars.decode("utf-16-le", errors="replace")
            continue
        if attr & ATTR_VOLUME_ID:
            pieces.clear()
            continue
        name = short_name(entry[:11], entry[12])
        if pieces and lfn_checksum(entry) == checksum:
            joined = "".join(pieces[i] for i in sorted(pieces))
            name = joined.split("\x00", 1)[0]
        pieces.clear()
        if name in (".", ".."):
            continue
        (adate, high, mclock, mdate, low, size) = DIR_TAIL.unpack_from(entry, 18)
        cluster = low | high << 16
        size = 0 if attr & ATTR_DIRECTORY else size
        mtime, atime = dos_time(mdate, mclock), dos_time(adate)
        nodes.append(Node(name, attr, cluster, size, mtime, atime, first_inode + pos // ENTRY))
    return nodes


class FatVolume:
    """A FAT volume in a file: folders by path, files' bytes by offset (read-only)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        size = os.fstat(self.fd).st_size
        self.geo: Geometry = parse_boot_sector(os.pread(self.fd, 512, 0), size, path)
        first = self.geo.fat_offset + self.geo.fat_copies[0] * self.geo.fat_size
        self.fat = os.pread(self.fd, self.geo.fat_size, first)
        self._folders: dict[str, dict[str, Node]] = {}
        self._chains: dict[int, list[int]] = {}
        self._lock = threading.Lock()
        root_time = 0.0
        self.root = Node("", ATTR_DIRECTORY, self.geo.root_cluster, 0, root_time, root_time, 1)

    def entry(self, cluster: int) -> int:
        bits = self.geo.fat_bits
        if bits == 32:
            return int.from_bytes(self.fat[4 * cluster : 4 * cluster + 4], "little") & 0x0FFFFFFF
        if bits == 16:
            return int.from_bytes(self.fat[2 * cluster : 2 * cluster + 2], "little")
        value = int.from_bytes(self.fat[cluster * 3 // 2 : cluster * 3 // 2 + 2], "little")
        return value >> 4 if cluster & 1 else value & 0xFFF

    def chain(self, cluster: int) -> list[int]:
        """The clusters of a chain from ``cluster`` (cached: random reads index into it)."""
        with self._lock:
            known = self._chains.get(cluster)
        if known is not None:
            return known
        out: list[int] = []
        bad = BAD[self.geo.fat_bits]
        while 2 <= cluster < self.geo.clusters + 2 and len(out) < MAX_CHAIN:
            out.append(cluster)
            cluster = self.entry(cluster)
            if cluster >= bad:
                break
        with self._lock:
            self._chains[out[0] if out else cluster] = out
        return out

    def _cluster_bytes(self, cluster: int, offset: int, length: int) -> bytes:
        at = self.geo.data_offset + (cluster - 2) * self.geo.cluster_size + offset
        return os.pread(self.fd, length, at)

    def read(self, node: Node, offset: int, length: int) -> bytes:
        end = min(offset + length, node.size)
        clusters = self.chain(node.cluster) if node.cluster else []
        size = self.geo.cluster_size
        parts = []
        pos = offset
        while pos < end:
            index, within = divmod(pos, size)
            if index >= len(clusters):
                raise OSError(errno.EIO, f"{node.name}: cluster chain shorter than the file")
            piece = min(end - pos, size - within)
            parts.append(self._cluster_bytes(clusters[index], within, piece))
            pos += piece
        return b"".join(parts)

    def folder(self, path: str) -> dict[str, Node]:
        with self._lock:
            known = self._folders.get(path)
        if known is not None:
            return known
        node = self.lookup(path)
        if not node.is_dir:
            raise OSError(errno.ENOTDIR, path)
        if node is self.root and self.geo.fat_bits != 32:
            data = os.pread(self.fd, self.geo.root_size, self.geo.root_offset)
            first = self.geo.root_offset // ENTRY
        else:
            clusters = self.chain(node.cluster)
            data = b"".join(self._cluster_bytes(c, 0, self.geo.cluster_size) for c in clusters)
            first = (self.geo.data_offset + (clusters[0] - 2) * self.geo.cluster_size) // ENTRY
        nodes = {n.name: n for n in parse_folder(data, first)}
        with self._lock:
            self._folders[path] = nodes
        return nodes

    def lookup(self, path: str) -> Node:
        if path in ("", "/"):
            return self.root
        parent, _, name = path.rstrip("/").rpartition("/")
        node = self.folder(parent or "/").get(name)
        if node is None:
            raise OSError(errno.ENOENT, path)
        return node

    def close(self) -> None:
        os.close(self.fd)


class FatFS(mfusepy.Operations):  # type: ignore[misc]
    """mfusepy operations over a FatVolume."""

    use_ns = True

    def __init__(self, partition: str) -> None:
        try:
            self.volume = FatVolume(partition)
        except FilesystemError as exc:
            raise SystemExit(f"clonebay-view: {exc}") from None

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        try:
            return self.volume.lookup(path).attrs()
        except OSError as exc:
            raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None

    def readdir(self, path: str, fh: int) -> list[str]:
        try:
            return [".", "..", *self.volume.folder(path)]
        except OSError as exc:
            raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None

    def open(self, path: str, flags: int) -> int:
        if flags & 3:
            raise mfusepy.FuseOSError(errno.EROFS)
        self.getattr(path)
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        try:
            return self.volume.read(self.volume.lookup(path), offset, size)
        except OSError as exc:
            raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None

    def statfs(self, path: str) -> dict[str, int]:
        geo = self.volume.geo
        return {"f_bsize": geo.cluster_size, "f_frsize": geo.cluster_size,
                "f_blocks": geo.clusters, "f_namemax": 255}  # fmt: skip

    def destroy(self, path: str) -> None:
        self.volume.close()
