"""The block device graph: which devices and files lie under a path, and which devices are
stacked on it.

Linux stacks block devices in three ways, and sysfs shows each of them:
  - a partition lies on its whole disk: /sys/class/block/sda1 has a ``partition`` file and sits
    in the disk's directory (the symlink resolves to .../block/sda/sda1);
  - dm (device-mapper: LVM logical volumes, kpartx and dm-crypt mappings, dm-linear) and md
    (software RAID) devices name the devices under them in ``slaves/``, and each of those names
    them back in ``holders/``;
  - a loop device reads and writes a file or another block device, named in
    ``loop/backing_file``. It is not a holder: nothing in ``holders/`` shows it, and the name
    there can be stale (" (deleted)", another mount namespace). So a loop device's backing is
    identified by device and inode: ``LOOP_GET_STATUS64`` (the numbers ``losetup --list``
    shows) when the device node can be opened, else a stat of the name. A deleted file that
    cannot be reached either way gets an identity of its own ("gone", the loop's major:minor):
    it cannot be the same as anything else anyone names.

An identity is ("blk", major, minor) for a block device, ("file", st_dev, st_ino) for a file,
("gone", major, minor) for the unreachable deleted backing file of that loop device.

``lower`` is a path's footprint: itself, for a partition its whole disk and every partition of
that disk, for a disk every partition, the devices in slaves/ and a loop device's backing, all
followed down again. Two paths whose footprints meet share data (or a disk) somewhere. The
footprint ignores a loop device's offset and size limit: any overlap of the devices counts, and
a disk counts as one (its partitions are not told apart), as the same-disk rule always did.
``covered`` is the narrower set a source reads: only the partitions a disk or the chain holds.
``upper`` is everything stacked on a set: holders, and loop devices whose backing is in the set,
followed up again.

``Graph.read`` takes one snapshot of sysfs (its root is a parameter, so unit tests build a fake
tree); the set functions are pure functions of a snapshot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from clonebay.errors import InputError
from clonebay.system.mounts import (
    MOUNTINFO,
    SWAP_MOUNTPOINT,
    SWAPS,
    DevNum,
    Resolver,
    block_devnum,
    parse_devnum,
    parse_mountinfo_line,
    parse_swaps,
)

Ident = tuple[str, int, int]
SYSFS = Path("/sys")
DEV = Path("/dev")
DELETED = " (deleted)"
LOOP_GET_STATUS64 = 0x4C05
_LOOP_INFO64 = struct.Struct("=QQQ")  # lo_device, lo_inode, lo_rdevice: the first fields
_LOOP_INFO64_SIZE = 232  # struct loop_info64 (linux/loop.h): 5 u64, 4 u32, 64+64+32 bytes, 2 u64
_MAX_DEPTH = 16  # md on dm on loop on partition is 4 levels; more means a cycle


def blk(devnum: DevNum) -> Ident:
    return ("blk", devnum[0], devnum[1])


def identify(path: str) -> Ident:
    """The identity of what ``path`` names (symlinks followed); OSError when it is not there."""
    st = os.stat(path)
    if stat.S_ISBLK(st.st_mode):
        return ("blk", os.major(st.st_rdev), os.minor(st.st_rdev))
    return ("file", st.st_dev, st.st_ino)


@dataclass(frozen=True)
class Backing:
    """What a loop device reads: the name sysfs gives (" (deleted)" included) and its identity."""

    name: str
    ident: Ident

    @property
    def deleted(self) -> bool:
        return self.name.endswith(DELETED)


@dataclass(frozen=True)
class Node:
    """One block device of the snapshot."""

    name: str
    devnum: DevNum
    disk: str | None = None  # a partition's whole disk
    slaves: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()
    backing: Backing | None = None  # loop devices with a backing

    @property
    def ident(self) -> Ident:
        return blk(self.devnum)

    @property
    def node(self) -> str:
        """The /dev node the kernel (devtmpfs) makes for it ("cciss!c0d0" -> /dev/cciss/c0d0)."""
        return "/dev/" + self.name.replace("!", "/")


@dataclass(frozen=True)
class Graph:
    """A snapshot of every block device and how they stack."""

    nodes: dict[str, Node] = field(default_factory=dict)

    @staticmethod
    def read(
        sysfs: Path = SYSFS, dev: Path | None = DEV, resolve: Callable[[str], Ident] = identify
    ) -> Graph:
        """Read /sys/class/block. ``dev`` None: never open a device node (a fake tree's names);
        ``resolve``: how a backing file's name becomes an identity (when the loop device itself
        cannot say)."""
        nodes: dict[str, Node] = {}
        try:
            entries = sorted((sysfs / "class" / "block").iterdir())
        except OSError:
            return Graph()
        for entry in entries:
            node = _read_node(entry, dev, resolve)
            if node is not None:
                nodes[node.name] = node
        return Graph(nodes)

    def by_ident(self, ident: Ident) -> Node | None:
        if ident[0] != "blk":
            return None
        return next((n for n in self.nodes.values() if n.ident == ident), None)

    def partitions(self, name: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.disk == name]

    def loops_over(self, idents: Iterable[Ident]) -> list[Node]:
        wanted = set(idents)
        return [n for n in self.nodes.values() if n.backing and n.backing.ident in wanted]

    def describe(self, ident: Ident) -> str:
        """A name for an identity: a device node, or the file a loop device reads."""
        node = self.by_ident(ident)
        if node is not None:
            return node.node
        for loop in self.nodes.values():
            if loop.backing and loop.backing.ident == ident:
                return f"{loop.backing.name} (behind {loop.node})"
        return f"inode {ident[2]} on device {os.major(ident[1])}:{os.minor(ident[1])}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="surrogateescape").strip()
    except OSError:
        return None


def _names(path: Path) -> tuple[str, ...]:
    try:
        return tuple(sorted(entry.name for entry in path.iterdir()))
    except OSError:
        return ()


def _read_node(entry: Path, dev: Path | None, resolve: Callable[[str], Ident]) -> Node | None:
    text = _read(entry / "dev")
    if not text:
        return None
    try:
        devnum = parse_devnum(text)
    except InputError:
        return None
    disk = None
    if (entry / "partition").exists():
        with contextlib.suppress(OSError):
            disk = entry.resolve().parent.name
    backing = None
    backing_name = _read(entry / "loop" / "backing_file")
    if backing_name:
        backing = Backing(
            backing_name, _backing_ident(entry.name, devnum, backing_name, dev, resolve)
        )
    return Node(
        name=entry.name,
        devnum=devnum,
        disk=disk,
        slaves=_names(entry / "slaves"),
        holders=_names(entry / "holders"),
        backing=backing,
    )


def _backing_ident(
    name: str, devnum: DevNum, backing: str, dev: Path | None, resolve: Callable[[str], Ident]
) -> Ident:
    """The loop device's backing by device and inode (see the module docstring)."""
    if dev is not None:
        found = loop_status_ident(str(dev / name.replace("!", "/")), devnum)
        if found is not None:
            return found
    if not backing.endswith(DELETED):
        with contextlib.suppress(OSError):
            return resolve(backing)
    return ("gone", devnum[0], devnum[1])


def loop_status_ident(node: str, devnum: DevNum) -> Ident | None:
    """The backing of the loop device at ``node`` as LOOP_GET_STATUS64 reports it (the kernel's
    stat of the open file: valid for a deleted file too); None when that cannot be read or the
    node is not that device."""
    try:
        fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISBLK(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != devnum:
            return None
        info = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(_LOOP_INFO64_SIZE))
    except OSError:
        return None
    finally:
        os.close(fd)
    device, inode, rdevice = _LOOP_INFO64.unpack_from(info)
    if rdevice:  # a block device (the kernel's encoding is the one os.major/minor decode)
        return ("blk", os.major(rdevice), os.minor(rdevice))
    return ("file", os.makedev(os.major(device), os.minor(device)), inode)


# --- the sets ---------------------------------------------------------------------------------


_Step = Callable[[Ident], Iterable[Ident]]


def _closure(start: Iterable[Ident], step: _Step) -> set[Ident]:
    """Every identity reachable from ``start`` by ``step`` (start included), depth-limited."""
    found = set(start)
    level = list(found)
    for _ in range(_MAX_DEPTH):
        following = {n for ident in level for n in step(ident) if n not in found}
        if not following:
            break
        found.update(following)
        level = list(following)
    return found


def _down(graph: Graph, ident: Ident, *, whole_disks: bool) -> Iterator[Ident]:
    """The devices and files right under ``ident`` (and beside it, with ``whole_disks``)."""
    node = graph.by_ident(ident)
    if node is None:
        return
    if node.disk is not None and whole_disks:
        disk = graph.nodes.get(node.disk)
        if disk is not None:
            yield disk.ident
            yield from (part.ident for part in graph.partitions(disk.name))
    elif node.disk is not None:
        # a source partition: its data lies on the disk, but not on the disk's other partitions
        disk = graph.nodes.get(node.disk)
        if disk is not None:
            yield from _down_only(graph, disk)
    if node.disk is None:
        yield from (part.ident for part in graph.partitions(node.name))
    yield from _down_only(graph, node)


def _down_only(graph: Graph, node: Node) -> Iterator[Ident]:
    for name in node.slaves:
        if name in graph.nodes:
            yield graph.nodes[name].ident
    if node.backing is not None:
        yield node.backing.ident


def lower(graph: Graph, ident: Ident) -> set[Ident]:
    """The footprint of ``ident``: every device and file under it, at whole-disk granularity."""
    return _closure([ident], lambda i: _down(graph, i, whole_disks=True))


def covered(graph: Graph, ident: Ident) -> set[Ident]:
    """What a source at ``ident`` reads: itself, the partitions of a disk, the devices and files
    under it; for a partition also the devices under its disk (a loop device's backing), but
    not the disk's other partitions."""
    return _closure([ident], lambda i: _down(graph, i, whole_disks=False))


def _up(graph: Graph, ident: Ident, start: set[Ident]) -> Iterator[Ident]:
    node = graph.by_ident(ident)
    if node is not None:
        for name in node.holders:
            if name in graph.nodes:
                yield graph.nodes[name].ident
        if node.disk is None and ident not in start:
            # a stacked device with partitions of its own (a loop device with --partscan)
            yield from (part.ident for part in graph.partitions(node.name))
    yield from (loop.ident for loop in graph.loops_over([ident]))


def upper(graph: Graph, idents: Iterable[Ident]) -> set[Ident]:
    """Every device stacked on ``idents`` (holders, loop devices and the partitions of those,
    followed up), ``idents`` themselves left out."""
    start = set(idents)
    return _closure(start, lambda i: _up(graph, i, start)) - start


def containers(graph: Graph, idents: Iterable[Ident]) -> set[Ident]:
    """``idents`` and the whole disks of the partitions among them: a device stacked on a disk
    (a loop device over /dev/sda) reaches all of its partitions."""
    found = set(idents)
    for ident in list(found):
        node = graph.by_ident(ident)
        if node is not None and node.disk in graph.nodes:
            found.add(graph.nodes[node.disk].ident)
    return found


def read_only_set(graph: Graph, ident: Ident) -> list[Node]:
    """The block devices a source at ``ident`` sets read-only: its footprint's devices (itself,
    its whole disk and every partition of it, down every stack), partitions first (a disk's own
    flag makes its partitions read as read-only too: set first, theirs would never be set)."""
    nodes = (graph.by_ident(i) for i in lower(graph, ident))
    return sorted((n for n in nodes if n is not None), key=lambda n: (n.disk is None, n.name))


# --- mounts, with their access --------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """A mount point (or "[SWAP]") of one device, and whether it can write to the device."""

    devnum: DevNum
    mountpoint: str
    writable: bool


def parse_mounts(
    mountinfo: str, swaps: Iterable[str] = (), resolve: Resolver = block_devnum
) -> list[Mount]:
    """Mounts from a mountinfo text (see mounts.py) with their access: read-write when the
    mount's options (field 6) or the filesystem's (field 11) say ``rw``; a ``mount -o ro`` has
    both ro, a read-only bind of a read-write filesystem still lets the kernel write. Swap
    areas are read-write. Anonymous device numbers (btrfs) resolve through the source path."""
    found: list[Mount] = []
    for line in mountinfo.splitlines():
        if not line.strip():
            continue
        entry = parse_mountinfo_line(line)
        fields = line.split()
        options = set(fields[5].split(","))
        tail = fields[fields.index("-", 6) + 3 :]
        options |= set(tail[0].split(",")) if tail else set()
        devnum: DevNum | None = entry.devnum
        if entry.major == 0:
            devnum = resolve(entry.source) if entry.source.startswith("/dev/") else None
        if devnum is not None:
            found.append(Mount(devnum, entry.mountpoint, "rw" in options))
    for path in swaps:
        swap = resolve(path)
        if swap is not None:
            found.append(Mount(swap, SWAP_MOUNTPOINT, True))
    return found


def read_mounts(mountinfo: str = MOUNTINFO, swaps: str = SWAPS) -> list[Mount]:
    """The running system's mounts and swap areas with their access."""
    texts = []
    for path in (mountinfo, swaps):
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                texts.append(handle.read())
        except FileNotFoundError:
            texts.append("")
    return parse_mounts(texts[0], parse_swaps(texts[1], swaps))


def mounts_on(mounts: Iterable[Mount], idents: Iterable[Ident]) -> list[Mount]:
    """The mounts of the block devices among ``idents``."""
    wanted = {(i[1], i[2]) for i in idents if i[0] == "blk"}
    return [m for m in mounts if m.devnum in wanted]
