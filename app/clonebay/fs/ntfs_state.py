"""Whether Windows left an NTFS volume hibernated or with an unfinished journal.

Hibernation and Fast Startup save the running system into C:\\hiberfil.sys; Windows keeps the
volume's in-memory state (open files, cached clusters) in that image, so a copy is only safe when
every byte is carried and the same machine resumes it. While the image is valid, its header starts
with "hibr" (older Windows) or "HIBR"; after a resume Windows rewrites it ("wake", or zeros).
hiberfil.sys is found by name in the root directory's index ($I30 of record 5): its $INDEX_ROOT
holds the top node and, when the directory is large, $INDEX_ALLOCATION holds INDX blocks (each
protected by fixups) whose in-use flags are in the $BITMAP named $I30.

$LogFile starts with two restart pages ("RSTR", fixed up). Their restart area says whether
clients are still logging and whether the volume was cleanly closed; a volume with log records
still to replay is not clean. ntfs-3g and mkntfs leave the file filled with 0xFF (empty: clean).

Spec: Linux-NTFS "NTFS Documentation" ("Directories", "Index record", "$LogFile"); field names
follow ntfs-3g's layout.h and logfile.h (RESTART_PAGE_HEADER, RESTART_AREA).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

from clonebay.errors import FilesystemError
from clonebay.fs.ntfs_layout import (
    AT_BITMAP,
    AT_DATA,
    AT_FILE_NAME,
    AT_INDEX_ALLOCATION,
    AT_INDEX_ROOT,
    FIXUP_STRIDE,
    apply_fixups,
    ref_number,
)
from clonebay.fs.ntfs_mft import Mft, Stream, merge_segments, pick

ROOT_DIRECTORY = 5
LOGFILE = 2
HIBERFIL = "hiberfil.sys"
HIBERNATED_MAGICS = (b"hibr", b"HIBR")
MAX_INDEX_BLOCK = 64 << 10
MAX_ROOT_INDEX = 256 << 20  # far beyond any root directory, small enough to read

# $FILE_NAME value: parent reference, four times, allocated and data size, flags, reparse tag,
# name length (characters), namespace; the UTF-16LE name follows.
FILE_NAME = struct.Struct("<QQQQQQQIIBB")
# $INDEX_ROOT value: indexed attribute type, collation rule, index block size, clusters per
# index block; an index header follows.
INDEX_ROOT = struct.Struct("<IIIB3x")
# Index header (node header): entries offset, index length, allocated size (all relative to the
# header's start), flags (1: the node has children in $INDEX_ALLOCATION).
INDEX_HEADER = struct.Struct("<IIIB3x")
# Index entry: file reference, entry length, key length, flags (1: has a child, 2: last entry).
INDEX_ENTRY = struct.Struct("<QHHH2x")
INDEX_ENTRY_END = 0x0002
INDX_HEADER_OFFSET = 0x18  # the index header inside an INDX block, after magic/usa/lsn/vcn
LARGE_INDEX = 0x01

# $LogFile restart page header: magic, usa offset/count, chkdsk LSN, system page size, log page
# size, restart area offset, minor and major version.
RESTART_PAGE = struct.Struct("<4sHHQIIHhh")
# Restart area: current LSN, log clients, client free list, client in-use list, flags, ...
RESTART_AREA = struct.Struct("<QHHHH")
LOGFILE_NO_CLIENT = 0xFFFF
RESTART_VOLUME_IS_CLEAN = 0x0002


class FileName(NamedTuple):
    parent: int
    parent_sequence: int
    name: str


def parse_file_name(value: bytes, where: str) -> FileName:
    if len(value) < FILE_NAME.size:
        raise FilesystemError(f"{where}: $FILE_NAME of {len(value)} bytes is too short")
    fields = FILE_NAME.unpack_from(value)
    parent, name_len = fields[0], fields[9]
    if FILE_NAME.size + 2 * name_len > len(value):
        raise FilesystemError(f"{where}: $FILE_NAME name runs past its value")
    raw = value[FILE_NAME.size : FILE_NAME.size + 2 * name_len]
    return FileName(ref_number(parent), parent >> 48, raw.decode("utf-16-le", "replace"))


def index_entries(node: bytes, header_at: int, where: str) -> list[tuple[int, bytes]]:
    """(file reference, key) of every entry in one index node (the end entry has no key)."""
    entries_ofs, index_len, _, _ = INDEX_HEADER.unpack_from(node, header_at)
    pos, end = header_at + entries_ofs, header_at + index_len
    if entries_ofs < INDEX_HEADER.size or end > len(node):
        raise FilesystemError(f"{where}: index header offsets {entries_ofs}/{index_len} invalid")
    out: list[tuple[int, bytes]] = []
    while True:  # each entry is >= 16 bytes and ``pos`` is bounded by ``end``
        if pos + INDEX_ENTRY.size > end:
            raise FilesystemError(f"{where}: index entries run past the node ({end})")
        ref, length, key_len, flags = INDEX_ENTRY.unpack_from(node, pos)
        if length < INDEX_ENTRY.size or length % 8 or pos + length > end:
            raise FilesystemError(f"{where}: index entry at {pos} has invalid length {length}")
        if flags & INDEX_ENTRY_END:
            return out
        if INDEX_ENTRY.size + key_len > length:
            raise FilesystemError(f"{where}: index entry at {pos} has a key past its end")
        out.append((ref, node[pos + INDEX_ENTRY.size : pos + INDEX_ENTRY.size + key_len]))
        pos += length


def root_entries(mft: Mft) -> list[tuple[int, bytes]]:
    """Every (file reference, $FILE_NAME key) in the root directory's $I30 index."""
    return directory_entries(mft, ROOT_DIRECTORY)


def directory_entries(
    mft: Mft, number: int, skip: Callable[[Stream, int, int], bool] | None = None
) -> list[tuple[int, bytes]]:
    """Every (file reference, $FILE_NAME key) in directory ``number``'s $I30 index; INDX
    blocks for which ``skip(blocks stream, offset, size)`` is true are left out."""
    boot, where = mft.boot, mft.where(number)
    attrs = mft.attributes(number)
    roots = pick(attrs, AT_INDEX_ROOT, "$I30")
    if len(roots) != 1 or roots[0].value is None or len(roots[0].value) < 32:
        raise FilesystemError(f"{where}: directory has no usable $INDEX_ROOT $I30")
    root = roots[0].value
    indexed_type, _, block_size, _ = INDEX_ROOT.unpack_from(root)
    if indexed_type != AT_FILE_NAME:
        raise FilesystemError(f"{where}: $I30 indexes attribute {indexed_type:#x}")
    entries = index_entries(root, INDEX_ROOT.size, f"{where} $INDEX_ROOT")
    if not INDEX_HEADER.unpack_from(root, INDEX_ROOT.size)[3] & LARGE_INDEX:
        return entries
    if block_size % FIXUP_STRIDE or not FIXUP_STRIDE <= block_size <= MAX_INDEX_BLOCK:
        raise FilesystemError(f"{where}: index block size {block_size} is not supported")
    cluster = boot.cluster_size
    alloc = merge_segments(
        pick(attrs, AT_INDEX_ALLOCATION, "$I30"), boot.clusters, cluster, f"{where} $I30 blocks"
    )
    bitmap = merge_segments(
        pick(attrs, AT_BITMAP, "$I30"), boot.clusters, cluster, f"{where} $I30 bitmap"
    )
    if alloc.data_size > MAX_ROOT_INDEX or bitmap.data_size > MAX_ROOT_INDEX // 8:
        raise FilesystemError(f"{where}: index of {alloc.data_size} bytes is implausible")
    in_use = bitmap.read(mft.src, cluster, 0, bitmap.data_size)
    vcn_unit = cluster if block_size >= cluster else FIXUP_STRIDE
    for i in range(alloc.data_size // block_size):
        if i // 8 >= len(in_use) or not in_use[i // 8] >> (i % 8) & 1:
            continue
        if skip is not None and skip(alloc, i * block_size, block_size):
            continue
        here = f"{where} INDX block {i}"
        block = bytearray(alloc.read(mft.src, cluster, i * block_size, block_size))
        apply_fixups(block, (b"INDX",), here)
        vcn = struct.unpack_from("<Q", block, 0x10)[0]
        if vcn * vcn_unit != i * block_size:
            raise FilesystemError(f"{here}: block says VCN {vcn}")
        entries.extend(index_entries(bytes(block), INDX_HEADER_OFFSET, here))
    return entries


def is_hibernated(mft: Mft) -> bool:
    """True when the root holds a hiberfil.sys whose header marks a saved system."""
    where = mft.where(ROOT_DIRECTORY)
    candidates = set()
    for ref, key in root_entries(mft):
        name = parse_file_name(key, f"{where} index key")
        if name.parent == ROOT_DIRECTORY and name.name.upper() == HIBERFIL.upper():
            candidates.add(ref)
    for ref in sorted(candidates):
        number = ref_number(ref)
        record = mft.record(number)
        if not record.in_use or record.sequence != ref >> 48 or not record.is_base:
            continue  # a stale index entry (deleted file): not the current hiberfil.sys
        data = mft.data(number, AT_DATA)
        if _header(mft, data) in HIBERNATED_MAGICS:
            return True
    return False


def _header(mft: Mft, data: Stream) -> bytes:
    if data.data_size < 4:
        return b""
    return data.read(mft.src, mft.boot.cluster_size, 0, 4)


class LogState(NamedTuple):
    clean: bool
    detail: str


def logfile_state(mft: Mft) -> LogState:
    """Read $LogFile's restart pages and say whether the volume was closed cleanly."""
    data = mft.data(LOGFILE, AT_DATA)
    cluster = mft.boot.cluster_size
    where = mft.where(LOGFILE) + " $LogFile"
    if data.special:
        raise FilesystemError(f"{where}: compressed, encrypted or sparse $LogFile")
    if data.data_size < 2 * 4096:
        raise FilesystemError(f"{where}: {data.data_size} bytes is too small")
    first = data.read(mft.src, cluster, 0, 4096)
    if first == b"\xff" * 4096:
        return LogState(True, "empty")
    pages: list[tuple[int, bool, str]] = []  # (current LSN, clean, detail)
    problems: list[str] = []
    offset = 0
    for _ in range(2):  # the restart page and its copy one system page further on
        try:
            page_size, parsed = _restart_page(mft, data, offset, where)
        except FilesystemError as exc:
            problems.append(str(exc))
            page_size = 4096
        else:
            pages.append(parsed)
        offset = page_size
    if not pages:
        return LogState(False, f"restart area not readable ({problems[0]})")
    _, clean, detail = max(pages)
    return LogState(clean, detail)


def _restart_page(
    mft: Mft, data: Stream, offset: int, where: str
) -> tuple[int, tuple[int, bool, str]]:
    """(system page size, (current LSN, clean, detail)) of the restart page at ``offset``."""
    cluster = mft.boot.cluster_size
    here = f"{where} restart page at {offset}"
    if offset + RESTART_PAGE.size > data.data_size:
        raise FilesystemError(f"{here}: past the end of $LogFile")
    head = data.read(mft.src, cluster, offset, RESTART_PAGE.size)
    magic, _, _, _, page_size, _, ra_ofs, _, major = RESTART_PAGE.unpack_from(head)
    if page_size % FIXUP_STRIDE or not FIXUP_STRIDE <= page_size <= 65536:
        raise FilesystemError(f"{here}: system page size {page_size} invalid")
    if offset + page_size > data.data_size:
        raise FilesystemError(f"{here}: page runs past the end of $LogFile")
    page = bytearray(data.read(mft.src, cluster, offset, page_size))
    magic = apply_fixups(page, (b"RSTR", b"CHKD"), here)
    if major not in (1, 2) or ra_ofs % 8 or ra_ofs + RESTART_AREA.size > page_size:
        raise FilesystemError(f"{here}: version {major} or restart area offset {ra_ofs} invalid")
    lsn, _, _, in_use_list, flags = RESTART_AREA.unpack_from(page, ra_ofs)
    if magic == b"CHKD":
        return page_size, (lsn, False, "chkdsk left the restart page marked (CHKD)")
    if in_use_list == LOGFILE_NO_CLIENT or flags & RESTART_VOLUME_IS_CLEAN:
        return page_size, (lsn, True, "clean restart area")
    return page_size, (lsn, False, f"restart area at LSN {lsn} has log records to replay")
