"""Which files an unreadable range hit: the report at the end of a rescue copy.

A rescue copy of a failing disk leaves zeros where the source could not be read (an image's
UNREADABLE records, or zeros on a cloned disk). ``files_hit`` reads the filesystem as copied
and says what those ranges held: for each file, its path and the byte ranges of it that are
lost; for each damaged structure, its name ("ext4 inode table of group 7", "NTFS $MFT records
1234-1240", "FAT #1 sectors 40-47"); bytes no file uses as free; and what cannot be decided as
unknown, with the reason (usually: the structure that would tell was unreadable too).

Every structure overlapping an unreadable range is treated as unreadable, whatever the copy
holds there, and is never parsed. The work is bounded by the ranges, not the volume: the
fixed layout is computed, and the walks that have to look for owners (ext inodes, NTFS MFT
records, FAT directories) stop as soon as every unreadable byte is explained. Each
filesystem's module says what its worst case reads.

A filesystem too damaged to map (its boot sector or superblock unreadable with no backup, or
not the filesystem it was said to be) gives one unknown hit whose note says why, not an
exception: a rescue report should still be written. A volume that cannot be opened raises
(DeviceError or InputError), and so does a read error on it (DeviceError): the copy itself
is then failing.

Spec for each filesystem: see fs/hits_ext.py, fs/hits_ntfs.py, fs/hits_fat.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from clonebay.errors import InputError, UsageError
from clonebay.fs import hits_ext, hits_fat, hits_ntfs
from clonebay.fs.hits_base import Hit, HitBook, HitKind
from clonebay.model import Extent
from clonebay.system.blockdev import ByteSource, FileSource

__all__ = ["Hit", "HitKind", "files_hit"]

Finder = Callable[[ByteSource, HitBook], None]


def _finder(fstype: str) -> Finder | None:
    if fstype in ("ext2", "ext3", "ext4"):
        return hits_ext.find
    if fstype == "ntfs":
        return hits_ntfs.find
    if fstype in ("fat12", "fat16", "fat32", "vfat", "fat"):
        return hits_fat.find
    return None


def files_hit(
    volume_path: str,
    fstype: str,
    bad: Sequence[tuple[int, int]],
    *,
    volume_offset: int = 0,
) -> list[Hit]:
    """What the unreadable ``bad`` ranges ((offset, length) from the filesystem's start) of
    the ``fstype`` volume at byte ``volume_offset`` of ``volume_path`` hit, in volume order.

    ``volume_path`` (a file or block device) is opened read-only and holds the volume as
    copied. ``fstype`` is a probe's name: ext2/3/4, ntfs, fat12/16/32 (or vfat).
    """
    runs = []
    for offset, length in bad:
        if offset < 0 or length < 0:
            raise UsageError(f"unreadable range ({offset}, {length}) is not a byte range")
        runs.append(Extent(offset, length))
    with FileSource(volume_path, volume_offset) as src:
        book = HitBook(runs)
        book.claim(
            HitKind.UNKNOWN,
            f"past the end of {src.name}",
            src.size,
            1 << 62,
            "the ranges lie beyond the volume: nothing there was mapped",
        )
        if not book.pending:
            return book.hits()
        finder = _finder(fstype)
        if finder is None:
            book.claim(
                HitKind.UNKNOWN,
                f"{fstype or 'unknown'} volume",
                0,
                src.size,
                f"files are not mapped on {fstype or 'this'} volumes",
            )
            return book.hits()
        try:
            finder(src, book)
        except InputError as exc:  # the filesystem as copied is damaged or not what it seems
            for e in book.pending:
                book.claim(HitKind.UNKNOWN, f"{fstype} volume", e.start, e.length, str(exc))
        return book.hits()
