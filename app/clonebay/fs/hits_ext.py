"""ext2/3/4: which files, directories and structures the unreadable ranges hit.

Four steps, each claiming bytes in the HitBook so that the next sees only what is left:

1. the fixed layout and 2. free space (``hits_ext_layout``): superblock and descriptor copies,
   bitmaps, inode tables, then what the block bitmaps mark free;
3. owners (``hits_ext_scan``): live inodes whose data, extent tree, indirect or attribute
   blocks hold what is left;
4. names (``hits_ext_names``): the paths of those inodes, and of the inodes an unreadable
   inode table took with it (a lost inode's file is wholly lost; its name is still in its
   directory).

What no step explains is reported as unknown, with the reasons that may explain it.
Cost: arithmetic per group, the bitmaps of the groups hit, then at worst every in-use inode,
map block and directory block (what e2fsck's first two passes read); usually the walks stop in
the groups around the hit.
"""

from __future__ import annotations

from clonebay.fs.ext_inode import EXTENTS_FL, Inode
from clonebay.fs.ext_layout import COMPAT_RESIZE_INODE
from clonebay.fs.hits_base import HitBook, HitKind
from clonebay.fs.hits_ext_layout import ROOT_INO, Volume, claim_free, claim_layout, open_volume
from clonebay.fs.hits_ext_names import Names, names_of
from clonebay.fs.hits_ext_scan import RESIZE_INO, Owner, Scanner
from clonebay.model import Extent
from clonebay.system.blockdev import ByteSource

NO_NAME = "no directory entry names this inode (an orphan, or its entry is unreadable)"


def find(src: ByteSource, book: HitBook) -> None:
    """Explain the unreadable bytes of the ext volume ``src`` in ``book``."""
    vol = open_volume(src, book)
    lost = claim_layout(vol)
    doubtful = claim_free(vol)
    scanner = Scanner(vol)
    scanner.claim_owners()
    lost_inodes = _in_use(vol, lost)
    wanted: dict[int, Inode | None] = {
        ino: o.inode for ino, o in scanner.owners.items() if not vol.special_name(ino)
    }
    wanted.update(
        dict.fromkeys(i for i in lost_inodes if i != ROOT_INO and not vol.special_name(i))
    )
    names = Names(scanner)
    paths = names_of(names, wanted)
    for ino, owner in scanner.owners.items():
        _report_owner(vol, ino, owner, paths.get(ino, []))
    for ino, group in lost_inodes.items():
        _report_lost_inode(vol, names, ino, group, paths.get(ino, []))
    maps = [paths.get(i, [f"<inode {i}>"])[0] for i, o in scanner.owners.items() if o.lost_maps]
    _report_unknown(vol, scanner, lost, doubtful, maps)


def _in_use(vol: Volume, lost: list[tuple[int, int, int]]) -> dict[int, int]:
    """Lost inodes the inode bitmaps mark in use (all of them where a bitmap is unreadable),
    inode -> group; of the reserved inodes only those that hold something (the root, the
    journal, the resize inode, quota files: the superblock names them)."""
    sb = vol.geo.sb
    reserved = {ROOT_INO, sb.journal_inum, sb.usr_quota_inum, sb.grp_quota_inum}
    if sb.feature_compat & COMPAT_RESIZE_INODE:
        reserved.add(RESIZE_INO)
    out: dict[int, int] = {}
    ipg = sb.inodes_per_group
    for group, first, last in lost:
        bitmap = vol.block(vol.descs[group].inode_bitmap)
        for ino in range(first, last + 1):
            index = ino - 1 - group * ipg
            if ino < vol.first_ino and ino not in reserved:
                continue
            if bitmap is None or bitmap[index // 8] >> (index % 8) & 1:
                out[ino] = group
    return out


def _report_owner(vol: Volume, ino: int, owner: Owner, paths: list[str]) -> None:
    book, fs = vol.book, vol.fs
    special = vol.special_name(ino)
    if special:
        ranges = [*owner.volume, *owner.tree, *owner.xattr]
        if ranges:
            book.add(HitKind.METADATA, special, ranges, at=owner.at)
        return
    path = paths[0] if paths else f"<inode {ino}>"
    notes = [] if paths else [NO_NAME]
    if len(paths) > 1:
        notes.append("also named " + ", ".join(paths[1:]))
    if owner.unwritten:
        notes.append("preallocated (unwritten) blocks were hit: they read as zeros anyway")
    if owner.lost_maps:
        notes.append("part of its block map is unreadable: those bytes cannot be located")
    data = [*owner.data, *(Extent(a, b - a) for a, b in owner.lost_maps)]
    kind = HitKind.DIRECTORY if owner.inode.is_dir else HitKind.FILE
    if owner.inode.is_dir:
        notes.append("entries in the lost part are gone: the files they named may be unreachable")
    if data or owner.volume:
        book.add(kind, path, data, at=owner.at, note="; ".join(notes))
    if owner.tree:
        what = "extent tree" if owner.inode.flags & EXTENTS_FL else "block map (indirect blocks)"
        book.add(HitKind.METADATA, f"{fs} {what} of {path}", owner.tree, at=owner.at)
    if owner.xattr:
        book.add(HitKind.METADATA, f"{fs} extended attributes of {path}", owner.xattr, at=owner.at)


def _report_lost_inode(vol: Volume, names: Names, ino: int, group: int, paths: list[str]) -> None:
    at = vol.inode_offset(ino)
    where = f"its inode ({ino}) is in the unreadable part of the inode table of group {group}"
    special = vol.special_name(ino)
    if special:
        note = f"{where}: where its blocks are is lost (e2fsck rebuilds it)"
        vol.book.add(HitKind.METADATA, special, [], at=at, note=note)
        return
    note = f"{where}: its size and block map are lost, and so is the whole file"
    if ino == ROOT_INO:
        note += "; no path can be followed from the root (e2fsck moves what it finds to lost+found)"
        paths = ["/"]
    if not paths:
        return  # no entry names it: most likely it was not in use
    if len(paths) > 1:
        note += "; also named " + ", ".join(paths[1:])
    kind = HitKind.DIRECTORY if ino == ROOT_INO or ino in names.dir_names else HitKind.FILE
    vol.book.add(kind, paths[0], [], at=at, note=note)


def _report_unknown(
    vol: Volume,
    scanner: Scanner,
    lost: list[tuple[int, int, int]],
    doubtful: set[int],
    maps: list[str],
) -> None:
    book = vol.book
    if not book.pending:
        return
    reasons = []
    if lost:
        spans = ", ".join(f"{a}-{b}" for _, a, b in lost[:8])
        reasons.append(f"they may belong to a file whose inode is unreadable (inodes {spans})")
    if maps:
        named = ", ".join(maps[:8])
        reasons.append(f"they may be data of {named}, whose block map is partly unreadable")
    if doubtful:
        groups = ", ".join(map(str, sorted(doubtful)[:8]))
        reasons.append(f"the block bitmap of group {groups} is unreadable: they may be free")
    if vol.from_backup:
        reasons.append("free space was not judged (the group descriptors came from a backup)")
    if scanner.damaged:
        reasons.append(f"{len(scanner.damaged)} inodes with a malformed block map were skipped")
    if not reasons:
        reasons.append("marked in use, but no inode claims them (e2fsck would free them)")
    pending = book.pending
    for e in pending:
        book.claim(
            HitKind.UNKNOWN, "blocks of unknown owner", e.start, e.length, "; ".join(reasons)
        )
