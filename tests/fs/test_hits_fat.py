"""What unreadable ranges hit on FAT12/16/32, against the truth.

Oracles. File placement comes from tagged content (tests/fs/tagged.py). Every file's and
directory's cluster chain comes from mtools' ``mshowfat``, and the layout (reserved sectors,
FATs, root directory, data area) from ``fsck.fat -v``. Volumes are made by mkfs.fat and
filled with mtools (no root, no vfat module), fragmented by writing a file into the holes
deleted files leave.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from clonebay.fs.hits import Hit, HitKind, files_hit
from clonebay.system.run import output
from clonebay.testdisks import fat as fatdisk
from tests.fs.hitdisks import MiB, Tagged, build_fat
from tests.fs.test_hits import assert_files_only, kinds, named, zeroed_copy

# bits -> (volume size, cluster size): FAT12 needs few clusters, FAT32 many.
SHAPES = {12: (8 * MiB, 4096), 16: (64 * MiB, 2048), 32: (64 * MiB, 512)}
DIRECTORIES = ("/", "/docs", "/many", "/pieces", "/Windows/System32/config")


@dataclass(frozen=True)
class Fat:
    vol: Tagged
    bits: int
    cluster: int
    layout: dict[str, int]  # fsck.fat's numbers

    def hits(self, bad: list[tuple[int, int]]) -> list[Hit]:
        return files_hit(str(self.vol.image), f"fat{self.bits}", bad)

    def chain(self, path: str) -> list[int]:
        """The clusters of ``path`` in chain order, as mshowfat lists them."""
        text = fatdisk.mtools("mshowfat", self.vol.image, "::" + path)
        clusters = []
        for first, last in re.findall(r"<(\d+)(?:-(\d+))?>", text):
            clusters.extend(range(int(first), int(last or first) + 1))
        return clusters

    def at(self, cluster: int) -> int:
        """Volume byte where ``cluster`` starts."""
        return self.layout["data"] + (cluster - 2) * self.cluster


def fsck_layout(image: Path) -> dict[str, int]:
    text = output(["fsck.fat", "-n", "-v", str(image)])

    def number(pattern: str) -> int:
        found = re.search(pattern, text)
        return int(found[1]) if found else 0

    return {
        "sector": number(r"(\d+) bytes per logical sector"),
        "fat": number(r"First FAT starts at byte (\d+)"),
        "fat_size": number(r"(\d+) bytes per FAT"),
        "root": number(r"Root directory starts at byte (\d+)"),
        "data": number(r"Data area starts at byte (\d+)"),
    }


@pytest.fixture(scope="module", params=sorted(SHAPES))
def fat(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Fat:
    bits = request.param
    size, cluster = SHAPES[bits]
    vol = build_fat(tmp_path_factory.mktemp(f"fat{bits}"), bits, size, cluster)
    return Fat(vol, bits, cluster, fsck_layout(vol.image))


def test_lost_file_ranges_match_the_tags(fat: Fat) -> None:
    bad = fat.vol.interesting_ranges()
    assert_files_only(fat.hits(bad), fat.vol, bad)


def test_each_chain_matches_mshowfat(fat: Fat) -> None:
    """A cluster in the middle of every directory's and some files' chains: the owner and
    the place in it are the cluster's index in mshowfat's chain."""
    files = [p for n, p in sorted(fat.vol.names.items()) if n < 100 or n % 97 == 0]
    for path in [*DIRECTORIES, *files]:
        if path == "/" and fat.bits != 32:
            continue  # FAT12/16's root is no chain (see the layout test)
        chain = fat.chain(path)
        index = len(chain) // 2
        found = fat.hits([(fat.at(chain[index]), fat.cluster)])
        if path in DIRECTORIES:
            assert kinds(found, HitKind.DIRECTORY) == {path: ((index * fat.cluster, fat.cluster),)}
        else:
            size = fat.vol.sizes[fat.vol.number(path)]
            start = index * fat.cluster
            assert kinds(found, HitKind.FILE) == {path: ((start, min(fat.cluster, size - start)),)}


def test_structures_are_named_as_fsck_places_them(fat: Fat) -> None:
    lay = fat.layout
    sector = lay["sector"]
    bad = [(lay["fat"] + 3 * sector + 8, 16), (lay["fat"] + lay["fat_size"] + 7 * sector, 4)]
    if fat.bits != 32:
        bad.append((lay["root"] + 64, 32))
    found = fat.hits(bad)
    first = named(found, "FAT #1 sector 3")
    assert first.ranges == (bad[0],) and "FAT #2 holds a readable copy" in first.note
    assert named(found, "FAT #2 sector 7").ranges == (bad[1],)
    if fat.bits != 32:
        assert kinds(found, HitKind.DIRECTORY) == {"/": ((64, 32),)}


def test_both_fat_copies_lost_break_a_chain(fat: Fat) -> None:
    if fat.bits == 12:
        pytest.skip("a FAT12 sector holds the entries of several small files")
    chain = fat.chain("/big.bin")
    cluster = chain[len(chain) // 2]
    entry = cluster * fat.bits // 8
    sector = fat.layout["sector"]
    start = entry - entry % sector
    bad = [(fat.layout["fat"] + copy * fat.layout["fat_size"] + start, sector) for copy in (0, 1)]
    found = fat.hits(bad)
    first_lost = start * 8 // fat.bits  # the first cluster whose entry the sector held
    reached = (chain.index(max(first_lost, chain[0])) + 1) * fat.cluster
    size = fat.vol.sizes[fat.vol.number("/big.bin")]
    big = named(found, "/big.bin")
    assert big.ranges == ((reached, size - reached),) and "chain breaks" in big.note
    assert "no copy of them is readable" in named(found, f"FAT #1 sector {start // sector}").note


def test_boot_sector(fat: Fat) -> None:
    first = fat.vol.interesting_ranges()[:1]
    found = fat.hits([(0, 512), *first])
    if fat.bits == 32:
        assert "backup boot sector at sector 6 was used" in named(found, "FAT boot sector").note
        assert kinds(found, HitKind.FILE) == fat.vol.expected(first)
    else:
        (hit,) = found
        assert hit.kind is HitKind.UNKNOWN and "no backup" in hit.note


def test_unreadable_directory_cluster_loses_its_files(fat: Fat) -> None:
    """/pieces' first cluster unreadable: its entries are gone, so the data of the files listed
    there is of unknown owner (its clusters read fine, nothing says whose they are)."""
    directory = fat.chain("/pieces")[0]
    piece = fat.chain("/pieces/p001.bin")[0]
    found = fat.hits([(fat.at(directory), fat.cluster), (fat.at(piece), 100)])
    assert kinds(found, HitKind.DIRECTORY) == {"/pieces": ((0, fat.cluster),)}
    (unknown,) = [h for h in found if h.kind is HitKind.UNKNOWN]
    assert unknown.ranges == ((fat.at(piece), 100),) and "/pieces" in unknown.note


def test_free_space(fat: Fat) -> None:
    end = fat.layout["data"] + (fat.vol.image.stat().st_size - fat.layout["data"]) // 2
    (hit,) = fat.hits([(end, 512)])
    assert (hit.kind, hit.name) == (HitKind.FREE, "free space")


def test_a_zeroed_copy_gives_the_same_hits(fat: Fat, tmp_path: Path) -> None:
    bad = [*fat.vol.interesting_ranges(), (fat.layout["fat"] + 512, 512)]
    copy = zeroed_copy(fat.vol.image, bad, tmp_path / "copy.img")
    assert files_hit(str(copy), f"fat{fat.bits}", bad) == fat.hits(bad)
