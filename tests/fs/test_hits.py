"""What unreadable ranges hit on ext2/3/4, against the truth (and the API's edges for all).

Oracles. File placement comes from tagged content (tests/fs/tagged.py): every 512 bytes of
every file carry their file and offset, found by searching the image, so the lost byte ranges
of each file are known without any parser. Owners of single blocks come from debugfs's
``icheck``/``ncheck`` (libext2fs), their place in a file from ``debugfs blocks``, extent tree
and indirect blocks from ``debugfs ex``/``stat``, and every group's superblock, descriptor,
bitmap and inode table locations from ``dumpe2fs``. Volumes are made by mke2fs -d and debugfs
-w (no root needed), fragmented by writing into the holes deleted files left.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from clonebay.errors import ClonebayError, UsageError
from clonebay.fs import extents
from clonebay.fs import hits as hits_module
from clonebay.fs.hits import Hit, HitKind, files_hit
from clonebay.fs.hits_base import SLACK_NOTE, HitBook
from clonebay.model import Extent
from clonebay.system.blockdev import FileSource
from clonebay.system.run import output, run
from clonebay.testdisks import ext as extdisk
from clonebay.testdisks import fat as fatdisk
from clonebay.testdisks import ntfs as ntfsdisk
from clonebay.testdisks.files import sparse_copy, sparse_file
from tests.edgedisks import loop
from tests.fs import tagged
from tests.fs.hitdisks import Tagged, build_ext

MiB = 1 << 20


@dataclass(frozen=True)
class Ext:
    vol: Tagged
    fs: str
    block: int

    @property
    def image(self) -> Path:
        return self.vol.image

    def hits(self, bad: list[tuple[int, int]]) -> list[Hit]:
        return files_hit(str(self.image), self.fs, bad)

    def debugfs(self, command: str) -> str:
        """One debugfs command's output (read-only, catastrophic mode: no bitmaps needed)."""
        return output(["debugfs", "-c", "-R", command, str(self.image)])


@pytest.fixture(
    scope="module", params=["ext4", "ext3", "ext2", "ext4-bigalloc", "ext4-meta-bg", "ext4-1k"]
)
def ext(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Ext:
    """Each layout: ext3's indirect blocks, ext2 (1 KiB blocks), bigalloc's 16 KiB clusters,
    meta_bg's scattered descriptor blocks."""
    variant = request.param
    vol = build_ext(tmp_path_factory.mktemp(variant), variant)
    block = int(re.search(r"Block size:\s+(\d+)", output(["dumpe2fs", "-h", str(vol.image)]))[1])
    return Ext(vol, variant.split("-")[0], block)


@pytest.fixture(scope="module")
def ext4(tmp_path_factory: pytest.TempPathFactory) -> Ext:
    vol = build_ext(tmp_path_factory.mktemp("ext4"), "ext4")
    return Ext(vol, "ext4", 4096)


def kinds(hits: list[Hit], *wanted: HitKind) -> dict[str, tuple[tuple[int, int], ...]]:
    return {h.name: h.ranges for h in hits if h.kind in wanted}


def named(hits: list[Hit], name: str) -> Hit:
    found = [h for h in hits if h.name == name]
    assert len(found) == 1, f"no single hit named {name!r} in {[h.name for h in hits]}"
    return found[0]


def located(vol: Tagged) -> dict[int, tuple[int, int]]:
    return tagged.locate(vol.image)


# --- files: lost byte ranges against the tags ---------------------------------------------


def assert_files_only(found: list[Hit], vol: Tagged, bad: list[tuple[int, int]]) -> None:
    """``found`` is exactly the files' lost ranges the tags say ``bad`` takes, and nothing."""
    assert kinds(found, HitKind.FILE) == vol.expected(bad)
    assert not kinds(found, HitKind.UNKNOWN, HitKind.FREE, HitKind.METADATA, HitKind.DIRECTORY)


def test_lost_file_ranges_match_the_tags(ext: Ext) -> None:
    bad = ext.vol.interesting_ranges()
    assert_files_only(ext.hits(bad), ext.vol, bad)


def test_a_hard_link_is_named_with_its_other_name(ext4: Ext) -> None:
    notes = tagged.sectors_of(located(ext4.vol), ext4.vol.number("/docs/notes.txt"))
    (hit,) = ext4.hits([(notes[3], 512)])
    names = {"/docs/notes.txt", "/docs/notes-link.txt"}
    assert hit.name in names and (names - {hit.name}).pop() in hit.note
    assert hit.ranges == ((3 * 512, 512),)


# --- owners of single blocks: debugfs icheck / ncheck / blocks -----------------------------


def icheck(ext: Ext, blocks: list[int]) -> dict[int, int]:
    """block -> owning inode, as libext2fs sees it (only blocks some inode owns)."""
    commands = [
        "icheck " + " ".join(map(str, blocks[i : i + 500])) for i in range(0, len(blocks), 500)
    ]
    text = extdisk.debugfs(ext.image, commands)
    return {int(b): int(i) for b, i in re.findall(r"^(\d+)\t(\d+)$", text, re.M)}


def ncheck(ext: Ext, inodes: set[int]) -> dict[int, set[str]]:
    text = ext.debugfs("ncheck " + " ".join(map(str, sorted(inodes))))
    out: dict[int, set[str]] = {}
    for number, path in re.findall(r"^(\d+)\t(.*)$", text, re.M):
        out.setdefault(int(number), set()).add(re.sub("/+", "/", path))
    return out


def file_blocks(ext: Ext, path: str) -> dict[int, int]:
    """physical -> logical block of a file's data, from debugfs stat's block list (where the
    map's own blocks are marked (IND), (ETB0) and so on and left out here)."""
    text = ext.debugfs(f'stat "{path}"')
    out = {}
    for lo, hi, first, _ in re.findall(r"\((\d+)(?:-(\d+))?\):(\d+)(?:-(\d+))?", text):
        for k in range(int(hi or lo) - int(lo) + 1):
            out[int(first) + k] = int(lo) + k
    return out


def test_each_owner_matches_icheck(ext: Ext) -> None:
    count = ext.image.stat().st_size // ext.block
    owners = icheck(ext, list(range(count)))
    rng = random.Random(7)
    sample = rng.sample(sorted(owners), 40) + rng.sample(range(count), 10)
    paths = ncheck(ext, {owners[b] for b in sample if b in owners and owners[b] > 10})
    special = {7: f"{ext.fs} resize inode (reserved GDT blocks)", 8: f"{ext.fs} journal"}
    for block in sample:
        hits = ext.hits([(block * ext.block, ext.block)])
        real = [h for h in hits if h.kind is not HitKind.FILE or h.ranges]  # not lost inodes
        hit = real[0]
        owner = owners.get(block)
        if owner is None:
            assert hit.kind in (HitKind.METADATA, HitKind.FREE), (block, hits)
        elif owner in special:
            assert hit.name == special[owner] or "GDT" in hit.name, (block, hits)
        elif hit.kind is HitKind.METADATA:  # an extent tree or indirect block of the file
            assert any(hit.name.endswith(" of " + p) for p in paths[owner]), (block, hits)
            assert block not in file_blocks(ext, hit.name.split(" of ", 1)[1])
        else:
            assert hit.name in paths[owner], (block, hits)
            index = file_blocks(ext, hit.name)[block]
            size = int(re.search(r"Size: (\d+)", ext.debugfs(f'stat "{hit.name}"'))[1])
            start = index * ext.block
            lost = ((start, min(ext.block, size - start)),) if start < size else ()
            assert hit.ranges == lost, (block, hits)  # () for the slack past the file's end


# --- metadata: dumpe2fs ---------------------------------------------------------------


def dumpe2fs_structures(ext: Ext) -> list[tuple[str, int]]:
    """(name clonebay must give, first block) of every group's fixed structures."""
    text = output(["dumpe2fs", str(ext.image)])
    size = re.search(r"Group descriptor size:\s+(\d+)", text)
    per_block = ext.block // int(size[1] if size else 32)  # meta_bg: one block per meta group
    out = []
    for group, body in re.findall(r"^Group (\d+):(.*?)(?=^Group |\Z)", text, re.M | re.S):
        g = int(group)
        for what, first in re.findall(
            r"(Primary superblock|Backup superblock|Group descriptors|Group descriptor"
            r"|Reserved GDT blocks|Block bitmap|Inode bitmap|Inode table) at (\d+)",
            body,
        ):
            name = {
                "Primary superblock": "superblock",
                "Backup superblock": f"superblock backup of group {g}",
                "Group descriptors": "group descriptors"
                if g == 0
                else f"group descriptor backup of group {g}",
                "Group descriptor": f"group descriptor block {g // per_block}"
                + ("" if g % per_block == 0 else " (backup)"),
                "Reserved GDT blocks": "reserved GDT blocks" + (f" of group {g}" if g else ""),
                "Block bitmap": f"block bitmap of group {g}",
                "Inode bitmap": f"inode bitmap of group {g}",
                "Inode table": f"inode table of group {g}",
            }[what]
            out.append((f"{ext.fs} {name}", int(first)))
    return out


def test_structures_are_named_as_dumpe2fs_places_them(ext: Ext) -> None:
    """Every group's structures unreadable at once, but for the last superblock and
    descriptor backup, which the layout is then read from."""
    structures = dumpe2fs_structures(ext)
    assert sum("superblock backup" in name for name, _ in structures) >= 1
    spare = max(n for n, _ in structures if "superblock backup" in n).rsplit(" ", 1)[1]
    kept = {
        f"{ext.fs} superblock backup of group {spare}",
        f"{ext.fs} group descriptor backup of group {spare}",
    }
    last_copy = {n: b for n, b in structures if n.endswith("(backup)")}  # meta_bg's, by block
    structures = [(n, b) for n, b in structures if n not in kept and last_copy.get(n) != b]
    bs = ext.block
    start = lambda block: max(block * bs, 1024)  # noqa: E731 (block 0 holds the boot area)
    hits = ext.hits([(start(block), 100) for _, block in structures])
    for name, block in structures:
        assert (start(block), 100) in named(hits, name).ranges, name
    assert not kinds(hits, HitKind.UNKNOWN, HitKind.FREE)
    assert "the backup at byte" in named(hits, f"{ext.fs} superblock").note


def zeroed_copy(image: Path, bad: list[tuple[int, int]], target: Path) -> Path:
    """A copy of ``image`` with ``bad`` read as zeros, as a rescue copy holds it."""
    sparse_file(target, image.stat().st_size)
    sparse_copy(image, target)
    with open(target, "r+b") as f:
        for start, length in bad:
            f.seek(start)
            f.write(bytes(length))
    return target


def listing(ext: Ext) -> dict[int, set[str]]:
    """inode -> paths, from debugfs's ``ls -p`` of every directory it can read (ncheck's inode
    scan stops at the first unreadable inode table block, so it cannot serve on a damaged copy)."""
    out: dict[int, set[str]] = {}
    todo = ["/"]
    while todo:
        folder = todo.pop()
        for line in ext.debugfs(f'ls -p "{folder}"').splitlines():
            fields = line.split("/")
            if len(fields) < 7 or fields[5] in (".", ".."):
                continue
            ino, mode, name = int(fields[1]), int(fields[2], 8), fields[5]
            path = folder.rstrip("/") + "/" + name
            out.setdefault(ino, set()).add(path)
            if mode & 0o170000 == 0o040000:
                todo.append(path)
    return out


def test_lost_inode_table_names_its_files(ext4: Ext, tmp_path: Path) -> None:
    """The files whose inodes an unreadable inode table block held, named as debugfs lists
    them on the copy (where that block is zeros: files in a directory whose own inode is lost
    cannot be named by either)."""
    number = int(re.search(r"Inode: (\d+)", ext4.debugfs('stat "/docs/report.pdf"'))[1])
    text = output(["dumpe2fs", str(ext4.image)])
    table = int(re.search(r"Inode table at (\d+)", text)[1])
    per_block = ext4.block // int(re.search(r"Inode size:\s+(\d+)", text)[1])
    block = table + (number - 1) // per_block
    first = (block - table) * per_block + 1
    bad = [(block * ext4.block, ext4.block)]
    copy = Ext(Tagged(zeroed_copy(ext4.image, bad, tmp_path / "copy.img")), "ext4", ext4.block)
    listed = listing(copy)
    truth = {i: listed[i] for i in range(max(first, 11), first + per_block) if i in listed}
    assert len(truth) >= 2
    hits = copy.hits(bad)
    assert (
        f"inodes {first}-{first + per_block - 1}" in named(hits, "ext4 inode table of group 0").note
    )
    lost = [h for h in hits if h.kind in (HitKind.FILE, HitKind.DIRECTORY)]
    assert len(lost) == len(truth)
    for ino, names in truth.items():
        (hit,) = [h for h in lost if h.name in names]
        assert f"its inode ({ino})" in hit.note and hit.ranges == ()


def test_a_zeroed_copy_gives_the_same_hits(ext4: Ext, tmp_path: Path) -> None:
    bad = [(0, 4096), *ext4.vol.interesting_ranges(), (450560, 8192)]
    copy = zeroed_copy(ext4.image, bad, tmp_path / "copy.img")
    assert files_hit(str(copy), "ext4", bad) == ext4.hits(bad)


def test_free_space_is_free(ext4: Ext) -> None:
    text = output(["dumpe2fs", str(ext4.image)])
    last = re.findall(r"Free blocks: (\d+)-(\d+)", text)[-1]
    block = (int(last[0]) + int(last[1])) // 2
    (hit,) = ext4.hits([(block * ext4.block + 10, 3 * ext4.block)])
    assert (hit.kind, hit.name) == (HitKind.FREE, "free space")


def test_extent_tree_block_and_what_it_mapped(ext4: Ext) -> None:
    # The root's index entry (level 0 of 1): logical first - last, then the tree block.
    root = re.search(
        r"^\s*0/\s*1\s+1/\s*1\s+(\d+) - +(\d+)\s+(\d+)", ext4.debugfs('ex "/frag.bin"'), re.M
    )
    mapped_end, tree = int(root[2]) + 1, int(root[3])
    data = sorted(file_blocks(ext4, "/frag.bin"))[5]
    hits = ext4.hits([(tree * ext4.block, ext4.block), (data * ext4.block, ext4.block)])
    assert named(hits, "ext4 extent tree of /frag.bin").ranges == ((tree * ext4.block, ext4.block),)
    frag = named(hits, "/frag.bin")
    assert frag.ranges == ((0, min(900_000, mapped_end * ext4.block)),)
    assert "block map is unreadable" in frag.note
    unknown = [h for h in hits if h.kind is HitKind.UNKNOWN]
    assert unknown and "/frag.bin" in unknown[0].note


def test_directory_blocks(ext4: Ext) -> None:
    blocks = {logical: physical for physical, logical in file_blocks(ext4, "/many").items()}
    assert len(blocks) > 3  # 600 entries: an htree directory
    hits = ext4.hits([(blocks[2] * ext4.block, ext4.block)])
    assert kinds(hits, HitKind.DIRECTORY) == {"/many": ((2 * ext4.block, ext4.block),)}


def test_journal(ext4: Ext) -> None:
    blocks = [int(b) for b in re.findall(r"\d+", ext4.debugfs("blocks <8>"))]
    (hit,) = ext4.hits([(blocks[100] * ext4.block, 10)])
    assert (hit.kind, hit.name) == (HitKind.METADATA, "ext4 journal")


def test_indirect_blocks_of_an_ext3_file(tmp_path: Path) -> None:
    ext3 = Ext(build_ext(tmp_path, "ext3"), "ext3", 4096)
    indirect = int(re.search(r"\(IND\):(\d+)", ext3.debugfs('stat "/big.bin"'))[1])
    hits = ext3.hits([(indirect * 4096, 4096)])
    assert named(hits, "ext3 block map (indirect blocks) of /big.bin").ranges == (
        (indirect * 4096, 4096),
    )
    assert named(hits, "/big.bin").ranges == ((12 * 4096, 1024 * 4096),)


def test_primary_superblock_and_descriptors_unreadable(ext4: Ext) -> None:
    bad = [(0, 2 * ext4.block), *ext4.vol.interesting_ranges()[:2]]
    hits = ext4.hits(bad)
    assert "backup" in named(hits, "ext4 superblock").note
    assert kinds(hits, HitKind.FILE) == ext4.vol.expected(bad)


def test_volume_inside_a_disk_image(ext4: Ext, tmp_path: Path) -> None:
    disk = sparse_file(tmp_path / "disk.img", ext4.image.stat().st_size + 3 * MiB)
    sparse_copy(ext4.image, disk, MiB)
    bad = ext4.vol.interesting_ranges()
    assert files_hit(str(disk), "ext4", bad, volume_offset=MiB) == ext4.hits(bad)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")
def test_a_partition_of_a_block_device(ext4: Ext, tmp_path: Path) -> None:
    """The same answers from a partition read through a loop device (read-only) as from the
    volume's own file."""
    disk = sparse_file(tmp_path / "disk.img", ext4.image.stat().st_size + 2 * MiB)
    run(["sfdisk", "--quiet", str(disk)], input_bytes=b"label: dos\nstart=2048, type=83\n")
    sparse_copy(ext4.image, disk, MiB)
    bad = ext4.vol.interesting_ranges()
    with loop(disk) as device:
        assert files_hit(device, "ext4", bad, volume_offset=MiB) == ext4.hits(bad)


# --- cost on a big volume ---------------------------------------------------------------


def test_a_big_volume_is_not_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64 GiB volume (sparse), a few files: mapping a bad block in one reads a few MiB."""
    image = sparse_file(tmp_path / "big.img", 64 << 30)
    run(["mkfs.ext4", "-q", "-F", "-b", "4096", str(image)])
    data = tmp_path / "data"
    data.write_bytes(tagged.content(1, 3 * MiB))
    extdisk.debugfs(image, [f"write {data} /a.bin", f"write {data} /b.bin"], write=True)
    block = next(
        p for p, q in file_blocks(Ext(Tagged(image), "ext4", 4096), "/b.bin").items() if q == 100
    )
    read: list[int] = []
    original = FileSource.pread

    def counting(self: FileSource, length: int, offset: int) -> bytes:
        read.append(length)
        return original(self, length, offset)

    monkeypatch.setattr(hits_module.FileSource, "pread", counting)
    hits = files_hit(str(image), "ext4", [(block * 4096, 4096)])
    assert [(h.name, h.ranges) for h in hits] == [("/b.bin", ((100 * 4096, 4096),))]
    assert sum(read) < MiB, f"read {sum(read)} bytes of a 64 GiB volume"


# --- the API's edges, and garbage -------------------------------------------------------


def test_garbage_gives_an_unknown_hit_that_says_why(tmp_path: Path) -> None:
    image = tmp_path / "noise.img"
    image.write_bytes(random.Random(1).randbytes(4 * MiB))
    for fstype in ("ext4", "ntfs", "fat32"):
        (hit,) = files_hit(str(image), fstype, [(123456, 1000)])
        assert hit.kind is HitKind.UNKNOWN and hit.ranges == ((123456, 1000),)
        assert hit.note


def test_other_volumes_and_bad_arguments(ext4: Ext) -> None:
    (hit,) = files_hit(str(ext4.image), "swap", [(8192, 100)])
    assert (hit.kind, hit.ranges) == (HitKind.UNKNOWN, ((8192, 100),))
    assert "not mapped on swap" in hit.note
    size = ext4.image.stat().st_size
    inside, past = ext4.hits([(size - 10, 30)])
    assert (inside.kind, inside.ranges) == (HitKind.FREE, ((size - 10, 10),))
    assert (past.kind, past.ranges) == (HitKind.UNKNOWN, ((size, 20),))
    assert "beyond the volume" in past.note
    assert ext4.hits([]) == []
    with pytest.raises(UsageError):
        ext4.hits([(-1, 10)])


def small_volume(fstype: str, folder: Path) -> bytes:
    """A 4 MiB volume of ``fstype`` holding a few tagged files (no root needed)."""
    image = sparse_file(folder / f"{fstype}.img", 4 * MiB)
    root = folder / f"{fstype}-files"
    (root / "d").mkdir(parents=True)
    for i in range(12):
        (root / "d" / f"file-{i}.bin").write_bytes(tagged.content(i, 7000 * i + 100))
    if fstype == "ext4":
        run(["mkfs.ext4", "-q", "-F", "-b", "1024", "-d", str(root), str(image)])
    elif fstype == "fat16":
        fatdisk.make_fat(image, 4 * MiB, 16, cluster_size=512)
        fatdisk.copy_files(image, root, [f"d/file-{i}.bin" for i in range(12)])
    else:
        ntfsdisk.make_ntfs(image, 4 * MiB, cluster_size=1024)
    return image.read_bytes()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("small")
    return {fstype: small_volume(fstype, folder) for fstype in ("ext4", "fat16", "ntfs")}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fstype=st.sampled_from(["ext4", "fat16", "ntfs"]),
    flips=st.lists(st.tuples(st.integers(0, 160 << 10), st.integers(0, 255)), max_size=40),
    bad=st.lists(st.tuples(st.integers(0, 4 * MiB), st.integers(1, 64 << 10)), max_size=5),
)
def test_damaged_volumes_give_hits_or_a_clear_error(
    small: dict[str, bytes],
    tmp_path: Path,
    fstype: str,
    flips: list[tuple[int, int]],
    bad: list[tuple[int, int]],
) -> None:
    """Garbage in the structures (the first 160 KiB hold the ext descriptors, bitmaps and
    inode tables, the FATs and root directory, the NTFS boot sector and $MFT)."""
    data = bytearray(small[fstype])
    for offset, value in flips:
        data[offset] = value
    image = tmp_path / "damaged.img"
    image.write_bytes(data)
    try:
        found = files_hit(str(image), fstype, bad)
    except ClonebayError:
        event(f"{fstype}: refused")
        return
    event(f"{fstype}: " + ",".join(sorted({h.kind.value for h in found})))
    assert all(isinstance(h, Hit) and h.kind in HitKind for h in found)
    volume = [
        Extent(a, n)
        for h in found
        if h.kind not in (HitKind.FILE, HitKind.DIRECTORY)
        for a, n in h.ranges
    ]
    assert extents.contains(
        extents.normalize(Extent(a, n) for a, n in bad), extents.normalize(volume)
    )


# --- the book-keeping --------------------------------------------------------------------


@given(
    bad=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 40)), max_size=8),
    takes=st.lists(st.tuples(st.integers(0, 340), st.integers(0, 60)), max_size=20),
)
def test_book_gives_each_unreadable_byte_once(
    bad: list[tuple[int, int]], takes: list[tuple[int, int]]
) -> None:
    book = HitBook([Extent(a, n) for a, n in bad])
    left = {b for a, n in bad for b in range(a, a + n)}
    for start, length in takes:
        region = set(range(start, start + length))
        assert book.unreadable(start, length) == bool(
            region & {b for a, n in bad for b in range(a, a + n)}
        )
        assert book.overlaps(start, length) == bool(region & left)
        got = {b for e in book.take(start, length) for b in range(e.start, e.end)}
        assert got == region & left
        left -= got
        assert {b for e in book.pending for b in range(e.start, e.end)} == left


def test_hits_merge_by_name_in_volume_order() -> None:
    book = HitBook([Extent(0, 1000)])
    book.claim(HitKind.METADATA, "b", 500, 10, "second")
    book.add(HitKind.FILE, "/a", [Extent(4096, 10), Extent(0, 5)], at=700, note="x")
    book.add(HitKind.FILE, "/a", [Extent(5, 5)], at=100)
    book.add(HitKind.FILE, "/slack", [], at=800)
    assert book.hits() == [
        Hit(HitKind.FILE, "/a", ((0, 10), (4096, 10)), "x"),
        Hit(HitKind.METADATA, "b", ((500, 10),), "second"),
        Hit(HitKind.FILE, "/slack", (), SLACK_NOTE),
    ]
    assert (
        book.hits()[0].describe() == "file: /a: 20 bytes lost of the file (bytes 0-9, 4096-4105); x"
    )
