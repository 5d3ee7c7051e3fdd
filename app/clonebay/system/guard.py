"""May this target be written, and may this source be read? The checks every job makes before
its first write.

The rules see the whole device graph (system/devgraph.py): partitions and their disk, dm and md
devices (LVM, RAID, kpartx, dm-crypt) through slaves/ and holders/, and loop devices through
their backing file or device, compared by device number and inode, never by name.

A target is refused when
  - it is the source (the same file or device through another path, a hard link), a partition
    of the source's disk or its disk, has the source's serial or WWN, or when their footprints
    (every device and file under each, whole disks counted as one) meet anywhere: a loop device
    over the source's disk, an LV on the source's partition, a source stacked on the target;
  - it holds the running live system;
  - it, a partition of it, a device under it or any device stacked on any of those (loop
    devices included) is mounted or used as swap;
  - it is held by md, LVM or dm (a device stacked on it by holders/);
  - it is a loop device whose backing file was deleted (whatever is written there is lost);
  - it is smaller than the job needs.
A source is refused when it, a partition of it, a device under it or a device stacked on any of
those is mounted read-write (a read-write mount changes while it is read: the copy would not be
consistent); ``allow_mounted`` turns that refusal into a warning.

Each refusal says which rule, and "nothing was written"; all come before anything is written.
"""

from __future__ import annotations

import os

from clonebay.errors import SafetyError, TargetTooSmallError
from clonebay.model import Disk
from clonebay.system import udev
from clonebay.system.devgraph import (
    Graph,
    Ident,
    Mount,
    containers,
    covered,
    identify,
    lower,
    mounts_on,
    read_mounts,
    upper,
)
from clonebay.units import human_size

NOTHING = "nothing was written"


def _identity(path: str, what: str) -> Ident:
    try:
        return identify(path)
    except OSError as exc:
        raise SafetyError(f"cannot check the {what} {path}: {exc.strerror}; {NOTHING}") from exc


def _listed_disk(path: str) -> Disk | None:
    """The listed disk (serial, WWN) ``path`` is or lies on; None for files and dm/md/loop
    devices udev does not list."""
    try:
        return udev.find_disk(path)
    except OSError:
        return None


def _disk_name(graph: Graph, ident: Ident) -> str | None:
    node = graph.by_ident(ident)
    if node is None:
        return None
    return node.disk or node.name


def check_not_source(source: str, target: str, graph: Graph | None = None) -> None:
    """Refuse a target that is the source, lies on the same disk, shares its serial or WWN, or
    meets it anywhere in the device graph (both directions, through any stacking)."""
    if not os.path.exists(target):
        return
    graph = graph or Graph.read()
    src, dst = _identity(source, "source"), _identity(target, "target")
    if src == dst:
        raise SafetyError(f"the target {target} is the source {source}; {NOTHING}")
    src_disk, dst_disk = _disk_name(graph, src), _disk_name(graph, dst)
    if src_disk and src_disk == dst_disk:
        raise SafetyError(
            f"the target {target} and the source {source} are on the same disk"
            f" /dev/{src_disk}; {NOTHING}"
        )
    _check_serials(source, target)
    src_node, dst_node = graph.by_ident(src), graph.by_ident(dst)
    src_back = src_node.backing if src_node else None
    dst_back = dst_node.backing if dst_node else None
    if src_back and dst_back and src_back.ident == dst_back.ident:
        raise SafetyError(
            f"{source} and {target} are loop devices over the same file {src_back.name}; {NOTHING}"
        )
    for node, other, other_id in ((dst_node, source, src), (src_node, target, dst)):
        if node and node.backing and node.backing.ident == other_id:
            raise SafetyError(
                f"{node.node} is a loop device over {other}: the source and the target are the"
                f" same data; {NOTHING}"
            )
    src_lower, dst_lower = lower(graph, src), lower(graph, dst)
    common = src_lower & dst_lower
    if common:
        shared = _shared(graph, common)
        raise SafetyError(
            f"the target {target} and the source {source} overlap in the device graph: both lie"
            f" on {shared} (a loop, dm, md or LVM device stacked on the other's disk); writing"
            f" the target would write the source. Refusing; {NOTHING}"
        )


def _shared(graph: Graph, common: set[Ident]) -> str:
    """The common ground named by its whole disk (or file) first: "/dev/sda (and 3 more)"."""

    def rank(ident: Ident) -> tuple[int, str]:
        node = graph.by_ident(ident)
        return (0 if node is None or node.disk is None else 1, graph.describe(ident))

    first, *rest = sorted(common, key=rank)
    return graph.describe(first) + (f" (and {len(rest)} more)" if rest else "")


def _check_serials(source: str, target: str) -> None:
    a, b = _listed_disk(source), _listed_disk(target)
    if not (a and b) or a.path == b.path:
        return
    if a.serial and a.serial == b.serial and a.transport == b.transport:
        raise SafetyError(
            f"{a.path} and {b.path} report the same serial {a.serial}: they may be one disk"
            f" seen twice (multipath); refusing; {NOTHING}"
        )
    if a.wwn and a.wwn == b.wwn:
        raise SafetyError(f"{a.path} and {b.path} have the same WWN {a.wwn}; refusing; {NOTHING}")


def _points(mounts: list[Mount]) -> str:
    return ", ".join(dict.fromkeys(m.mountpoint for m in mounts))


def _where(graph: Graph, mounts: list[Mount], path: str) -> str:
    """ " through /dev/loop1" when the mounts are on devices other than ``path``'s own node."""
    names = []
    for devnum in dict.fromkeys(m.devnum for m in mounts):
        node = graph.by_ident(("blk", *devnum))
        if node is not None and os.path.realpath(path) != os.path.realpath(node.node):
            names.append(node.node)
    return f" through {', '.join(names)}" if names else ""


def check_target_free(
    target: str, graph: Graph | None = None, mounts: list[Mount] | None = None
) -> None:
    """Refuse a target that is the live system, mounted (also through stacked devices), held
    by md/LVM/dm, or a loop device over a deleted file."""
    if not os.path.exists(target):
        return
    graph = graph or Graph.read()
    mounts = read_mounts() if mounts is None else mounts
    ident = _identity(target, "target")
    footprint = lower(graph, ident)
    stacked = upper(graph, footprint)
    busy = mounts_on(mounts, footprint | stacked)
    nodes = [n for n in (graph.by_ident(i) for i in footprint | stacked) if n is not None]
    backings = [n.backing.name for n in nodes if n.backing]
    if udev.is_live_medium([m.mountpoint for m in busy]) or any(
        udev.is_live_medium([], name) for name in backings
    ):
        raise SafetyError(f"{target} holds the running system; it can never be a target")
    if busy:
        raise SafetyError(
            f"{target} is mounted ({_points(busy)}){_where(graph, busy, target)}: unmount it"
            f" first; {NOTHING}"
        )
    holders = sorted(n.node for n in nodes if n.slaves and n.ident in stacked)
    if holders:
        raise SafetyError(
            f"{target} is in use by {', '.join(holders)} (RAID, LVM or device-mapper):"
            f" stop those first; {NOTHING}"
        )
    node = graph.by_ident(ident)
    if node is not None and node.backing is not None and node.backing.deleted:
        raise SafetyError(
            f"{target} is a loop device over a deleted file ({node.backing.name}): whatever is"
            f" written there is lost when it is detached. Refusing; {NOTHING}"
        )


def check_source_free(
    source: str,
    allow_mounted: bool = False,
    graph: Graph | None = None,
    mounts: list[Mount] | None = None,
) -> list[str]:
    """Refuse a source mounted read-write: on itself, a partition it holds, a device under it or
    any device stacked on those (loop devices included; for an image file, a loop device over
    it). Read-only mounts are fine. With ``allow_mounted`` the refusal becomes the warning
    returned (to be shown with the result)."""
    graph = graph or Graph.read()
    mounts = read_mounts() if mounts is None else mounts
    reads = covered(graph, _identity(source, "source"))
    scope = containers(graph, reads)
    writable = [m for m in mounts_on(mounts, scope | upper(graph, scope)) if m.writable]
    if not writable:
        return []
    where = f"{_points(writable)}{_where(graph, writable, source)}"
    if allow_mounted:
        return [
            f"the source {source} was mounted read-write ({where}) while it was copied: files"
            " changed meanwhile may be inconsistent in the copy"
        ]
    raise SafetyError(
        f"the source {source} is mounted read-write ({where}): what changes while it is read"
        " would make the copy inconsistent. Unmount it (or remount it read-only), or pass"
        f" --allow-mounted-source to copy it anyway; {NOTHING}"
    )


def check_size(target_size: int, needed: int, what: str) -> None:
    if target_size < needed:
        raise TargetTooSmallError(
            f"the target holds {human_size(target_size)} ({target_size} bytes); {what} needs"
            f" {human_size(needed)} ({needed} bytes); {NOTHING}"
        )


def check_target(source: str | None, target: str) -> None:
    """Every refusal that does not depend on the plan's size (source None: restore, receive)."""
    graph = Graph.read()
    if source is not None:
        check_not_source(source, target, graph)
    check_target_free(target, graph)
