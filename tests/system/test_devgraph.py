"""The device graph on a fake sysfs tree laid out as the kernel lays it out (disks under
devices/, partitions inside their disk's directory, class/block/ symlinks, slaves/ and holders/,
loop/backing_file): partitions and disks, an LVM volume (dm) on a partition, an md RAID1 over two
disks' partitions, loop devices over a file, a disk and a partition, a deleted backing file, and a
holder cycle. No root, no devices: this kernel has no dm or md (tests/iso/test_live_stacks.py
builds the real ones in the live system)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clonebay.system.devgraph import (
    Graph,
    Ident,
    containers,
    covered,
    identify,
    lower,
    mounts_on,
    parse_mounts,
    read_only_set,
    upper,
)

NUMBERS = {  # name -> (major, minor)
    "sda": (8, 0),
    "sda1": (8, 1),
    "sda2": (8, 2),
    "sdb": (8, 16),
    "sdb1": (8, 17),
    "sdb2": (8, 18),
    "sdc": (8, 32),
    "sdc1": (8, 33),
    "dm-0": (253, 0),
    "md0": (9, 0),
    "loop3": (7, 3),
    "loop3p1": (259, 3),
    "loop4": (7, 4),
    "loop4p1": (259, 4),
    "loop5": (7, 5),
    "loop6": (7, 6),
    "dm-7": (253, 7),
    "dm-8": (253, 8),
}


def b(name: str) -> Ident:
    return ("blk", *NUMBERS[name])


class FakeSysfs:
    """Builds /sys/devices/virtual/block/... and /sys/class/block/ links in a folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices = root / "devices" / "virtual" / "block"
        self.classes = root / "class" / "block"
        self.classes.mkdir(parents=True)

    def add(self, name: str, disk: str | None = None, **attrs: str) -> Path:
        where = (self.devices / disk / name) if disk else (self.devices / name)
        where.mkdir(parents=True)
        (where / "dev").write_text("{}:{}\n".format(*NUMBERS[name]))
        if disk:
            (where / "partition").write_text("1\n")
        for key in ("slaves", "holders"):
            (where / key).mkdir()
        if "backing" in attrs:
            (where / "loop").mkdir()
            (where / "loop" / "backing_file").write_text(attrs["backing"] + "\n")
        (self.classes / name).symlink_to(where)
        return where

    def stack(self, upper_name: str, *lower_names: str) -> None:
        """``upper_name`` (dm or md) on ``lower_names``: slaves/ one way, holders/ the other."""
        up = self.classes / upper_name
        for low in lower_names:
            (up / "slaves" / low).symlink_to(self.classes / low)
            (self.classes / low / "holders" / upper_name).symlink_to(up)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(b"\0" * 4096)
    return path


@pytest.fixture
def graph(tmp_path: Path, image: Path) -> Graph:
    fake = FakeSysfs(tmp_path / "sys")
    for disk, parts in (("sda", ["sda1", "sda2"]), ("sdb", ["sdb1", "sdb2"]), ("sdc", ["sdc1"])):
        fake.add(disk)
        for part in parts:
            fake.add(part, disk)
    fake.add("dm-0")  # an LV on sda2
    fake.stack("dm-0", "sda2")
    fake.add("md0")  # RAID1 over sdb1 and sdc1
    fake.stack("md0", "sdb1", "sdc1")
    fake.add("loop3", backing=str(image))  # a disk image, partitioned
    fake.add("loop3p1", "loop3")
    fake.add("loop4", backing="/dev/sdb")  # a second view of a whole disk, partitioned
    fake.add("loop4p1", "loop4")
    fake.add("loop5", backing="/dev/sda1")  # a partition seen as a disk
    fake.add("loop6", backing=f"{tmp_path}/gone.img (deleted)")
    fake.add("dm-7")  # two dm devices naming each other: a broken tree must not hang
    fake.add("dm-8")
    fake.stack("dm-7", "dm-8")
    fake.stack("dm-8", "dm-7")
    nodes = {f"/dev/{name}": b(name) for name in NUMBERS}

    def resolve(path: str) -> Ident:
        return nodes[path] if path in nodes else identify(path)

    return Graph.read(tmp_path / "sys", dev=None, resolve=resolve)


def test_a_partition_lies_on_its_disk_and_beside_its_siblings(graph: Graph) -> None:
    assert graph.nodes["sda1"].disk == "sda" and graph.nodes["sda"].disk is None
    assert lower(graph, b("sda1")) == {b("sda"), b("sda1"), b("sda2")}
    assert lower(graph, b("sdc")) == {b("sdc"), b("sdc1")}
    # a source reads only what it covers: not its disk's other partitions
    assert covered(graph, b("sda1")) == {b("sda1")}
    assert covered(graph, b("sda")) == {b("sda"), b("sda1"), b("sda2")}


def test_an_lv_reaches_down_to_the_disk_under_its_pv(graph: Graph) -> None:
    assert {b("dm-0"), b("sda2"), b("sda"), b("sda1")} <= lower(graph, b("dm-0"))
    # so a clone of sda1 onto the LV (or the reverse) meets at sda
    assert lower(graph, b("dm-0")) & lower(graph, b("sda1"))
    assert b("dm-0") in upper(graph, lower(graph, b("sda")))
    assert b("dm-0") not in upper(graph, containers(graph, covered(graph, b("sda1"))))


def test_raid_members_on_two_disks(graph: Graph) -> None:
    low = lower(graph, b("md0"))
    assert {b("sdb"), b("sdb1"), b("sdb2"), b("sdc"), b("sdc1")} <= low
    # sdc as a target: md0 is stacked on it (a holder), and holds sdb too
    stacked = upper(graph, lower(graph, b("sdc")))
    assert b("md0") in stacked
    assert graph.nodes["md0"].slaves == ("sdb1", "sdc1")


def test_loop_over_a_file_by_inode(graph: Graph, image: Path, tmp_path: Path) -> None:
    alias = tmp_path / "hard-link.img"
    alias.hardlink_to(image)
    assert graph.nodes["loop3"].backing is not None
    assert graph.nodes["loop3"].backing.ident == identify(str(alias))
    stacked = upper(graph, {identify(str(alias))})
    assert stacked == {b("loop3"), b("loop3p1")}  # the loop device and its partition
    assert identify(str(image)) in lower(graph, b("loop3p1"))


def test_loop_over_a_disk_or_a_partition(graph: Graph) -> None:
    assert {b("sdb"), b("sdb1"), b("sdb2")} <= lower(graph, b("loop4p1"))
    assert lower(graph, b("loop4")) & lower(graph, b("md0"))  # both reach sdb
    # a loop over the whole disk is stacked on each of its partitions' data, offsets aside
    assert {b("loop4"), b("loop4p1")} <= upper(graph, containers(graph, {b("sdb2")}))
    # a loop over sda1: over the source sda1, and in the footprint of anything on sda
    assert b("loop5") in upper(graph, {b("sda1")})
    assert b("sda1") in lower(graph, b("loop5")) and b("sda2") in lower(graph, b("loop5"))
    # but not stacked on sda2 (the source's sibling): a source sda2 is not read through it
    assert b("loop5") not in upper(graph, containers(graph, covered(graph, b("sda2"))))


def test_a_deleted_backing_file_is_an_identity_of_its_own(graph: Graph) -> None:
    backing = graph.nodes["loop6"].backing
    assert backing is not None and backing.deleted
    assert backing.ident == ("gone", 7, 6)
    assert lower(graph, b("loop6")) == {b("loop6"), ("gone", 7, 6)}
    assert "gone.img (deleted)" in graph.describe(("gone", 7, 6))


def test_a_holder_cycle_ends(graph: Graph) -> None:
    assert lower(graph, b("dm-7")) == {b("dm-7"), b("dm-8")}
    assert upper(graph, {b("dm-7")}) == {b("dm-8")}


def test_read_only_set_is_the_footprint_partitions_first(graph: Graph) -> None:
    names = [n.name for n in read_only_set(graph, b("sda1"))]
    assert names == ["sda1", "sda2", "sda"]
    assert [n.name for n in read_only_set(graph, b("loop4p1"))][-2:] == ["loop4", "sdb"]


def test_a_missing_sysfs_is_an_empty_graph(tmp_path: Path) -> None:
    assert Graph.read(tmp_path / "nothing", dev=None).nodes == {}


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
30 22 8:17 / /mnt/ro ro,relatime shared:2 - ext4 /dev/sdb1 ro
31 22 8:17 / /mnt/bind-ro ro,relatime shared:2 - ext4 /dev/sdb1 rw
32 22 0:45 / /srv rw,relatime shared:3 - btrfs /dev/sdc1 rw,space_cache=v2
33 22 0:5 / /dev rw,nosuid shared:4 - devtmpfs udev rw,size=1000k
"""


def test_mounts_with_their_access() -> None:
    numbers = {"/dev/sdc1": (8, 33), "/dev/sda2": (8, 2)}
    mounts = parse_mounts(MOUNTINFO, ["/dev/sda2", "/swapfile"], numbers.get)
    found = {(m.devnum, m.mountpoint): m.writable for m in mounts}
    assert found == {
        ((8, 1), "/"): True,
        ((8, 17), "/mnt/ro"): False,
        ((8, 17), "/mnt/bind-ro"): True,  # a read-only bind of a read-write filesystem
        ((8, 33), "/srv"): True,  # btrfs: an anonymous device number, found by its source
        ((8, 2), "[SWAP]"): True,
    }
    assert [m.mountpoint for m in mounts_on(mounts, [b("sdb1"), ("file", 1, 2)])] == [
        "/mnt/ro",
        "/mnt/bind-ro",
    ]
