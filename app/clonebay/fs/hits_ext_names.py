"""ext2/3/4 hits, part three: the paths of the inodes found.

An ext inode does not know its name: names live in directory entries, and a file may have
several (hard links). A directory knows its parent (its ".." entry), so once the directory
holding a file is found, the path follows by reading "..", then the parent's entries, up to the
root. Finding that first directory means reading directories until one names the inode; they
are read nearest-group-first, because ext4's Orlov allocator puts a file's inode in its
directory's group, and the search stops when every inode sought has its names. Like debugfs's
``ncheck``, at worst it reads every directory.

A name that cannot be found (an orphan inode, or an entry in an unreadable directory block)
comes out as ``<inode N>``, and an ancestor that cannot be named as ``<directory N>``.
"""

from __future__ import annotations

from clonebay.errors import FilesystemError
from clonebay.fs import ext_layout as layout
from clonebay.fs.ext_inode import DATA, FT_DIR, INLINE_DATA_FL, BlockMap, Inode, dir_entries
from clonebay.fs.ext_inode import inline_dir_entries as inline_entries
from clonebay.fs.hits_base import path_up
from clonebay.fs.hits_ext_layout import ROOT_INO
from clonebay.fs.hits_ext_scan import Scanner, nearest_groups

MAX_NAMES = 8  # hard links looked for per inode


def _text(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


class Names:
    """Directory entries read so far, and the searches and path walks that read them."""

    def __init__(self, scanner: Scanner) -> None:
        self.scanner = scanner
        self.vol = scanner.vol
        self.wide = not self.vol.geo.sb.feature_incompat & layout.INCOMPAT_FILETYPE
        self.parent: dict[int, int] = {}  # directory -> its ".."
        self.dir_names: dict[int, tuple[int, str]] = {}  # directory -> (parent, name)
        self.read: set[int] = set()  # directories whose entries were read
        self.unreadable: set[int] = set()  # directories with unreadable entries

    def entries(self, ino: int, inode: Inode | None = None) -> list[tuple[int, bytes, int]]:
        """The entries of directory ``ino``; records its parent and subdirectories' names."""
        self.read.add(ino)
        inode = inode or self.vol.read_inode(ino)
        if inode is None or not inode.is_dir:
            self.unreadable.add(ino)
            return []
        if inode.flags & INLINE_DATA_FL:
            found = list(inline_entries(inode, self.wide))
        else:
            found = self._block_entries(ino, inode)
        for child, name, ftype in found:
            if name == b"..":
                self.parent[ino] = child
            elif name != b"." and (ftype == FT_DIR or self.wide):
                self.dir_names.setdefault(child, (ino, _text(name)))
        return found

    def _block_entries(self, ino: int, inode: Inode) -> list[tuple[int, bytes, int]]:
        vol = self.vol
        bs = vol.bs
        found: list[tuple[int, bytes, int]] = []
        walk = BlockMap(vol.block, bs, vol.geo.blocks_count)
        try:
            walk.walk(inode, -(-inode.size // bs))
        except FilesystemError:
            self.unreadable.add(ino)
        if walk.lost:
            self.unreadable.add(ino)
        for piece in walk.pieces:
            if piece.role != DATA:
                continue
            for block in range(piece.physical, piece.physical + piece.blocks):
                data = vol.block(block)
                if data is None:
                    self.unreadable.add(ino)
                    continue
                found.extend(dir_entries(data, bs, self.wide))
        return found

    def search(self, wanted: dict[int, int]) -> dict[int, list[tuple[int, str]]]:
        """(directory, name) of each inode in ``wanted`` (inode -> names to find), reading
        directories nearest the inodes' groups first until all are found."""
        found: dict[int, list[tuple[int, str]]] = {ino: [] for ino in wanted}
        left = {ino for ino, count in wanted.items() if count > 0}
        ipg = self.vol.geo.sb.inodes_per_group
        spans = [((ino - 1) // ipg, (ino - 1) // ipg) for ino in left]
        for group in nearest_groups(self.vol, spans):
            if not left:
                break
            for dino, dinode in self.scanner.directories(group):
                if not left:
                    break
                for child, name, _ in self.entries(dino, dinode):
                    if child in left and name not in (b".", b".."):
                        found[child].append((dino, _text(name)))
                        if len(found[child]) >= wanted[child]:
                            left.discard(child)
        return found

    def path(self, ino: int) -> str:
        """The path of directory ``ino`` from the root, through ".." entries."""
        return path_up(ino, ROOT_INO, self.dir_name, "<directory {}>")

    def dir_name(self, ino: int) -> tuple[int, str] | None:
        """(parent, name) of directory ``ino``, reading it and its parent if need be."""
        if ino not in self.dir_names:
            if ino not in self.read:
                self.entries(ino)
            parent = self.parent.get(ino)
            if parent is not None and parent not in self.read:
                self.entries(parent)
        return self.dir_names.get(ino)


def join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def names_of(names: Names, inodes: dict[int, Inode | None]) -> dict[int, list[str]]:
    """Paths of ``inodes`` (None: the inode itself is lost, look for one name)."""
    paths: dict[int, list[str]] = {}
    searched: dict[int, int] = {}
    for ino, inode in inodes.items():
        if ino == ROOT_INO:
            paths[ino] = ["/"]
        elif inode is not None and inode.is_dir and names.dir_name(ino) is not None:
            paths[ino] = [names.path(ino)]
        else:
            searched[ino] = (
                1 if inode is None or inode.is_dir else min(inode.links_count, MAX_NAMES)
            )
    for ino, entries in names.search(searched).items():
        paths[ino] = [join(names.path(parent), name) for parent, name in entries]
    return paths
