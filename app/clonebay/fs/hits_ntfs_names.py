"""NTFS hits: the paths of MFT records, and the names of records that are themselves lost.

Every NTFS file record carries its own name and its parent directory's record number
($FILE_NAME), so a path is found by walking parents up to the root (record 5), one record per
level. A record that is unreadable has lost its own name; its parent directory's index still
lists it (an index entry is the child's reference plus a copy of its $FILE_NAME). Those are
found by reading directory indexes, nearest record numbers first: NTFS hands out records in
order, so a file's record usually lies a little after its directory's. The search stops when
every lost record that $MFT's bitmap marks in use is named; at worst it reads every directory
index, as chkdsk's index pass does.
"""

from __future__ import annotations

from collections.abc import Callable

from clonebay.errors import FilesystemError
from clonebay.fs.hits_base import path_up
from clonebay.fs.ntfs_layout import AT_FILE_NAME, RECORD_IN_USE, RECORD_IS_DIRECTORY, ref_number
from clonebay.fs.ntfs_mft import Mft, Stream
from clonebay.fs.ntfs_state import FILE_NAME, ROOT_DIRECTORY, directory_entries, parse_file_name

DOS_NAMESPACE = 2  # an 8.3 alias beside the real (Win32 or POSIX) name
NAMESPACE_OFFSET = 0x41  # in a $FILE_NAME value
FLAGS_OFFSET = 0x16  # MFT record header: flags (in use, directory)
FLAGS_FIELD = 7  # $FILE_NAME's file attribute flags, in ntfs_state.FILE_NAME's fields
FILE_ATTR_DIRECTORY = 0x10000000  # ntfs-3g layout.h: FILE_ATTR_DUP_FILE_NAME_INDEX_PRESENT

Unreadable = Callable[[int], bool]  # is MFT record n unreadable?


class Paths:
    """Names and paths of MFT records, cached."""

    def __init__(self, mft: Mft, lost: Unreadable) -> None:
        self.mft, self.lost = mft, lost
        self.names: dict[int, tuple[int, str] | None] = {}

    def name(self, number: int) -> tuple[int, str] | None:
        """(parent record, name) from the record's own $FILE_NAME, or None."""
        if number not in self.names:
            self.names[number] = None if self.lost(number) else self._read_name(number)
        return self.names[number]

    def _read_name(self, number: int) -> tuple[int, str] | None:
        where = self.mft.where(number)
        best: tuple[int, int, str] | None = None  # (namespace, parent, name)
        try:
            for attr in self.mft.attributes(number):
                if attr.type != AT_FILE_NAME or attr.value is None:
                    continue
                name = parse_file_name(attr.value, where)  # checks the value's length
                if best is None or best[0] == DOS_NAMESPACE:
                    best = (attr.value[NAMESPACE_OFFSET], name.parent, name.name)
        except FilesystemError:
            return None
        return None if best is None else (best[1], best[2])

    def path(self, number: int) -> str:
        """The record's path from the root ("<record N>" for a part that cannot be named)."""
        return path_up(number, ROOT_DIRECTORY, self.name, "<record {}>")


def name_lost(
    mft: Mft, paths: Paths, lost: set[int], skip: Callable[[Stream, int, int], bool]
) -> dict[int, tuple[str, bool]]:
    """Path of each of the ``lost`` records, and whether it is a directory, from their
    parents' index entries (an index key is a copy of the child's $FILE_NAME)."""
    found: dict[int, tuple[str, bool]] = {}
    left = set(lost)
    for number in _directories_near(mft, sorted(lost), paths.lost):
        if not left:
            break
        try:
            entries = directory_entries(mft, number, skip)
        except FilesystemError:
            continue
        for ref, key in entries:
            child = ref_number(ref)
            if child in left:
                try:
                    name = parse_file_name(key, mft.where(number))
                except FilesystemError:
                    continue
                if name.parent == number:
                    is_dir = bool(FILE_NAME.unpack_from(key)[FLAGS_FIELD] & FILE_ATTR_DIRECTORY)
                    found[child] = (paths.path(number).rstrip("/") + "/" + name.name, is_dir)
                    left.discard(child)
    return found


def _directories_near(mft: Mft, targets: list[int], lost: Unreadable) -> list[int]:
    """Readable in-use directory records, nearest to ``targets`` first (reads every record
    header: 4 bytes of flags per record, in large pieces)."""
    dirs = []
    for number, raw in mft.iter_records():
        if lost(number) or raw[:4] != b"FILE":
            continue
        flags = raw[FLAGS_OFFSET]
        if flags & RECORD_IN_USE and flags & RECORD_IS_DIRECTORY:
            dirs.append(number)

    def distance(number: int) -> int:
        return min(abs(number - t) for t in targets) if targets else 0

    return sorted(dirs, key=distance)
