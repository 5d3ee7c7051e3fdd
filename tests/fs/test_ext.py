"""ext2/3/4 probe against the truth: dumpe2fs's free blocks, partclone.extfs's map, blkid, e2fsck,
and file hashes read back from a copy that holds only our extents.

Oracles. dumpe2fs lists every group's free blocks as libext2fs sees them (BLOCK_UNINIT groups
computed, the last group cut at the block count); its complement plus the boot area (the first
2048 bytes, which with 1 KiB blocks lie partly outside every group) must equal our map exactly.
With bigalloc, dumpe2fs prints a free range's end as the first block of its last free cluster, so
the parser widens it by a cluster. partclone.extfs -D is the brief's oracle for every variant but
bigalloc: partclone 0.3.23 compares free clusters against free blocks and refuses bigalloc
volumes ("bitmap free count err"), and its map with --force is wrong.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from clonebay.errors import CommandError, FilesystemError
from clonebay.fs import ext, ext_layout, extents
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import BytesSource, FileSource
from clonebay.system.run import output, run
from clonebay.testdisks import ext as extdisk
from clonebay.testdisks.tree import Tree, small_tree, usr_tree
from tests.oracles import assert_covers, copy_extents, partclone_used

MiB = 1 << 20
SB = ext_layout.SUPERBLOCK_OFFSET

# variant -> image size; "ext4-usr" is the ext4 variant holding a /usr-like tree.
CASES = {
    "ext4-usr": 300 * MiB,
    "ext4": 64 * MiB,
    "ext4-1k": 64 * MiB,
    "ext4-uninit": 512 * MiB,
    "ext4-64bit": 256 * MiB,
    "ext4-bigalloc": 128 * MiB,
    "ext4-csum-seed": 64 * MiB,
    "ext4-meta-bg": 256 * MiB,
    "ext4-sparse-super2": 512 * MiB,
    "ext4-64k": 256 * MiB,
    "ext3": 64 * MiB,
    "ext3-1k": 64 * MiB,
    "ext2": 64 * MiB,
}
DELETED_SIZE = 192 << 10


def deleted_marker(i: int) -> bytes:
    return f"<clonebay deleted file {i:03d}>".encode()


def deleted_files() -> dict[str, bytes]:
    """Files put in and removed again: their bytes stay in free blocks."""
    return {
        f"trash/gone-{i}.bin": (deleted_marker(i) * (DELETED_SIZE // 24 + 1))[:DELETED_SIZE]
        for i in range(3)
    }


@dataclass(frozen=True)
class Built:
    case: str
    variant: str
    image: Path
    tree: Tree
    volume: Volume


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    return small_tree(tmp_path_factory.mktemp("small") / "tree", files=300, big_file=4 * MiB)


def probe_file(path: Path) -> Volume:
    with FileSource(str(path)) as src:
        assert ext.detect(src.pread(65536, 0))
        return ext.probe(src)


@pytest.fixture(scope="module", params=sorted(CASES))
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, small: Tree
) -> Built:
    case = request.param
    work = tmp_path_factory.mktemp(case)
    if case == "ext4-usr":
        variant, tree = "ext4", usr_tree(work / "usr", files=5000, big_file=64 * MiB)
    else:
        variant, tree = case, small
    image = extdisk.build_ext(
        work / "ext.img", CASES[case], tree, variant, label=case[:16], deleted=deleted_files()
    )
    return Built(case, variant, image, tree, probe_file(image))


def dumpe2fs_used(image: Path) -> tuple[Extent, ...]:
    """[0, block count) minus every group's "Free blocks" in dumpe2fs, as bytes."""
    text = output(["dumpe2fs", str(image)])
    header = dumpe2fs_header(image)
    bs, count = int(header["Block size"]), int(header["Block count"])
    ratio = int(header.get("Cluster size", bs)) // bs
    free = []
    for line in re.findall(r"^\s+Free blocks: (.*)$", text, re.M):
        for item in filter(None, (part.strip() for part in line.split(","))):
            first, _, last = item.partition("-")
            end = int(last or first) + ratio  # past the last free cluster
            free.append(Extent(int(first) * bs, (end - int(first)) * bs))
    return extents.subtract((Extent(0, count * bs),), free)


def dumpe2fs_header(image: Path) -> dict[str, str]:
    text = output(["dumpe2fs", "-h", str(image)])
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines())}


def test_identity_matches_blkid_and_dumpe2fs(built: Built) -> None:
    volume = built.volume
    found = dict(
        line.split("=", 1)
        for line in output(["blkid", "-p", "-o", "export", str(built.image)]).splitlines()
    )
    header = dumpe2fs_header(built.image)
    assert volume.fstype == found["TYPE"] == built.variant.split("-")[0]
    assert (volume.uuid, volume.label) == (found["UUID"], found["LABEL"])
    assert (volume.copy, volume.state, volume.notes) == (CopyMethod.NATIVE, VolumeState.CLEAN, ())
    assert volume.block_size == int(header.get("Cluster size", header["Block size"]))
    assert volume.size == int(header["Block count"]) * int(header["Block size"])


def test_map_equals_dumpe2fs(built: Built) -> None:
    expected = extents.normalize([Extent(0, 2048), *dumpe2fs_used(built.image)])
    assert built.volume.used == expected


def test_map_covers_partclone(built: Built) -> None:
    if built.variant == "ext4-bigalloc":
        with pytest.raises(CommandError, match="bitmap free count err"):
            partclone_used(built.image, "ext")
        pytest.skip(
            "partclone.extfs refuses bigalloc (see module docstring); dumpe2fs is the oracle"
        )
    assert_covers(built.volume.used, partclone_used(built.image, "ext"))


def test_copy_of_map_is_a_whole_filesystem(built: Built, tmp_path: Path) -> None:
    copy = tmp_path / "copy.img"
    copy_extents(built.image, copy, built.volume.used)
    extdisk.fsck(copy)
    extdisk.check_tree(copy, built.tree)
    assert probe_file(copy) == built.volume


MARKER_PREFIX = b"<clonebay deleted file "


def markers_in(path: Path, runs: tuple[Extent, ...]) -> set[bytes]:
    """The deleted-file markers found in the byte ``runs`` of ``path`` (one pass)."""
    found: set[bytes] = set()
    width = len(deleted_marker(0))
    with open(path, "rb") as f:
        for run_ in extents.split(runs, 8 * MiB):
            start = max(0, run_.start - width)  # a marker may straddle two pieces
            piece = os.pread(f.fileno(), run_.end - start, start)
            at = piece.find(MARKER_PREFIX)
            while at >= 0:
                found.add(piece[at : at + width])
                at = piece.find(MARKER_PREFIX, at + 1)
    return found


def test_deleted_files_stay_behind(built: Built, tmp_path: Path) -> None:
    markers = {deleted_marker(i) for i in range(len(deleted_files()))}
    whole = (Extent(0, built.image.stat().st_size),)
    assert markers_in(built.image, whole) >= markers, "the deleted data should be in the image"
    copy = tmp_path / "copy.img"
    copy_extents(built.image, copy, built.volume.used)
    assert not markers_in(copy, built.volume.used), "free blocks holding deleted data copied"
    assert not any(p.startswith("trash/") for p in built.tree.files)


def test_variants_are_what_they_claim(built: Built) -> None:
    header = dumpe2fs_header(built.image)
    features = header["Filesystem features"].split()
    groups = output(["dumpe2fs", str(built.image)]).count("\nGroup ")
    expect = {
        "ext4-uninit": lambda: "uninit_bg" in features and groups >= 16,
        "ext4-64bit": lambda: "64bit" in features and header["Group descriptor size"] == "128",
        "ext4-bigalloc": lambda: "bigalloc" in features,
        "ext4-csum-seed": lambda: "metadata_csum_seed" in features,
        "ext4-meta-bg": lambda: "meta_bg" in features and groups > 16,
        "ext4-sparse-super2": lambda: "sparse_super2" in features,
        "ext4-1k": lambda: header["Block size"] == "1024",
        "ext4-64k": lambda: header["Block size"] == "65536",
        "ext2": lambda: "has_journal" not in features,
    }
    assert expect.get(built.variant, lambda: True)()
    if built.variant in ("ext4-uninit", "ext4-1k", "ext4-meta-bg", "ext4-sparse-super2"):
        assert uninit_groups(built.image), "the variant should have BLOCK_UNINIT groups"


# A journal that needs recovery: the data of its last transaction is free on disk.


@pytest.mark.parametrize(
    ("variant", "checksums", "ghost_size"),
    [("ext4", True, 3 * MiB), ("ext4-1k", True, 30 * MiB), ("ext3", False, 3 * MiB),
     ("ext3-1k", False, 3 * MiB)],
)  # fmt: skip
def test_pending_journal_is_mapped(
    *, small: Tree, tmp_path: Path, variant: str, checksums: bool, ghost_size: int
) -> None:
    image = extdisk.build_ext(tmp_path / "crash.img", 64 * MiB, small, variant)
    data = random.Random(7).randbytes(ghost_size)
    blocks = extdisk.add_pending_journal(image, "ghost.bin", data, checksums=checksums)
    bs = extdisk.block_size(image)
    ghost = extents.normalize(Extent(b * bs, bs) for b in blocks)
    volume = probe_file(image)
    assert volume.state == VolumeState.NEEDS_RECOVERY
    on_disk = partclone_used(image, "ext")
    assert not extents.intersect(on_disk, ghost), "the ghost file must be free on disk"
    assert extents.contains(volume.used, ghost)
    if ghost_size > 16 * MiB:  # spills into groups whose bitmap is uninitialised on disk
        assert extents.intersect(ghost, uninit_groups(image))
    assert_covers(volume.used, extents.normalize([*on_disk, *ghost]))
    copy = tmp_path / "copy.img"
    copy_extents(image, copy, volume.used)
    run(["e2fsck", "-fy", str(copy)], ok_codes=(0, 1))  # replays the journal
    extdisk.fsck(copy)
    hashes = extdisk.file_hashes(copy)
    assert hashes.pop("ghost.bin") == hashlib.sha256(data).hexdigest()
    assert hashes == small.files


def uninit_groups(image: Path) -> tuple[Extent, ...]:
    """Byte ranges of the groups dumpe2fs shows as BLOCK_UNINIT."""
    bs = extdisk.block_size(image)
    found = re.findall(r"\(Blocks (\d+)-(\d+)\).*BLOCK_UNINIT", output(["dumpe2fs", str(image)]))
    return extents.normalize(Extent(int(a) * bs, (int(b) - int(a) + 1) * bs) for a, b in found)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory, small: Tree) -> Path:
    """An ext4 image (no journal checksums) with one pending transaction."""
    work = tmp_path_factory.mktemp("crashed")
    image = extdisk.build_ext(work / "crash.img", 32 * MiB, small, "ext4")
    extdisk.add_pending_journal(image, "ghost.bin", b"ghost" * 5000)
    return image


def journal_superblock_offset(image: Path) -> int:
    return extdisk.blocks_of(image, "<8>")[0] * extdisk.block_size(image)


def test_pending_fast_commits_are_refused(crashed: Path) -> None:
    data = bytearray(crashed.read_bytes())
    at = journal_superblock_offset(crashed) + 0x28  # jbd2 s_feature_incompat
    struct.pack_into(">I", data, at, struct.unpack_from(">I", data, at)[0] | 0x20)
    with pytest.raises(FilesystemError, match="fast-commit"):
        ext.probe(BytesSource(bytes(data)))


def test_journaled_resize_is_refused(tmp_path: Path, small: Tree) -> None:
    image = extdisk.build_ext(tmp_path / "resize.img", 32 * MiB, small, "ext4")
    bs = extdisk.block_size(image)
    block0 = bytearray(image.read_bytes()[:bs])
    struct.pack_into("<I", block0, SB + 4, struct.unpack_from("<I", block0, SB + 4)[0] - 8)
    payload = tmp_path / "block0"
    payload.write_bytes(bytes(block0))
    extdisk.debugfs(image, ["jo", f"jw -b 0 {payload}", "jc"], write=True)
    with pytest.raises(FilesystemError, match="another size"):
        probe_file(image)


def test_external_journal_device_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.img"
    path.write_bytes(bytes(8 * MiB))
    run(["mke2fs", "-q", "-F", "-O", "journal_dev", "-b", "4096", str(path)])
    with pytest.raises(FilesystemError, match="external journal device"):
        probe_file(path)


# Small images patched in memory: states and damage.


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """24 MiB images of a few variants (three groups with 1 KiB blocks), as bytes."""
    work = tmp_path_factory.mktemp("tiny")
    tree = small_tree(work / "tree", files=30)
    images = {}
    for variant in ("ext2", "ext4", "ext4-1k", "ext4-uninit", "ext3"):
        images[variant] = extdisk.build_ext(work / f"{variant}.img", 24 * MiB, tree, variant)
    crash = shutil.copyfile(images["ext4-1k"], work / "crash.img")
    extdisk.add_pending_journal(crash, "ghost.bin", random.Random(3).randbytes(300 << 10))
    images["crash"] = crash
    return {name: path.read_bytes() for name, path in images.items()}


def patched(data: bytes, offset: int, fmt: str, value: int, *, fix_checksum: bool = True) -> bytes:
    """``data`` with one superblock field set (and its crc32c redone when it has one)."""
    out = bytearray(data)
    struct.pack_into(fmt, out, SB + offset, value)
    sb = ext_layout.parse_superblock(bytes(out[SB : SB + 1024]))
    if fix_checksum and sb.feature_ro_compat & ext_layout.RO_COMPAT_METADATA_CSUM:
        checksum = ext_layout.superblock_checksum(bytes(out[SB : SB + 1024]))
        struct.pack_into("<I", out, SB + 0x3FC, checksum)
    return bytes(out)


@pytest.mark.parametrize("variant", ["ext2", "ext4"])
def test_states(tiny: dict[str, bytes], variant: str) -> None:
    data = tiny[variant]
    assert ext.probe(BytesSource(data)).state == VolumeState.CLEAN
    cases = [
        (0x3A, "<H", 0, VolumeState.DIRTY, "not clean"),  # s_state without VALID_FS
        (0x3A, "<H", 3, VolumeState.ERRORS, "recorded errors"),  # VALID_FS | ERROR_FS
        (0x194, "<I", 4, VolumeState.ERRORS, "recorded errors (4)"),  # s_error_count
    ]
    for offset, fmt, value, state, note in cases:
        volume = ext.probe(BytesSource(patched(data, offset, fmt, value)))
        assert volume.state == state
        assert any(note in n for n in volume.notes)
        assert volume.used == ext.probe(BytesSource(data)).used


def test_garbage_superblock_is_refused() -> None:
    rng = random.Random(5)
    for _ in range(50):
        data = bytearray(2 * MiB)
        data[SB : SB + 1024] = rng.randbytes(1024)
        data[SB + 0x38 : SB + 0x3A] = b"\x53\xef"
        assert ext.detect(bytes(data[:65536]))
        with pytest.raises(FilesystemError, match="garbage"):
            ext.probe(BytesSource(bytes(data), "garbage"))


@pytest.mark.parametrize("variant", ["ext2", "ext4"])
def test_truncated_image_is_refused(tiny: dict[str, bytes], variant: str) -> None:
    data = tiny[variant]
    with pytest.raises(FilesystemError, match="truncated partition"):
        ext.probe(BytesSource(data[: len(data) // 2], "half"))


@pytest.mark.parametrize("offset", [0x04, 0x38 + 4, 0x78, 0x200, 0x3FB])
def test_flipped_bit_in_checksummed_superblock(tiny: dict[str, bytes], offset: int) -> None:
    data = bytearray(tiny["ext4"])
    data[SB + offset] ^= 0x10
    with pytest.raises(FilesystemError, match="checksum mismatch"):
        ext.probe(BytesSource(bytes(data)))


@pytest.mark.parametrize("variant", ["ext4", "ext4-uninit"])  # crc32c, crc16
def test_flipped_bit_in_group_descriptor(tiny: dict[str, bytes], variant: str) -> None:
    data = bytearray(tiny[variant])
    bs = 1024 << struct.unpack_from("<I", data, SB + 0x18)[0]
    gdt = (SB // bs + 1) * bs
    data[gdt + 0x0C] ^= 0x01  # group 0's free block count
    with pytest.raises(FilesystemError, match="group descriptor 0: checksum mismatch"):
        ext.probe(BytesSource(bytes(data)))


@pytest.mark.parametrize("variant", ["ext2", "ext4"])
@pytest.mark.parametrize(
    ("offset", "bit", "message"),
    [
        (0x60, 0x80000, "unsupported incompatible feature"),
        (0x60, 0x1, "unsupported incompatible feature"),  # compression
        (0x64, 0x80, "unsupported read-only-compatible"),  # snapshots
        (0x64, 0x100000, "unsupported read-only-compatible"),
    ],
)
def test_unknown_features_are_refused(
    *, tiny: dict[str, bytes], variant: str, offset: int, bit: int, message: str
) -> None:
    data = tiny[variant]
    value = struct.unpack_from("<I", data, SB + offset)[0] | bit
    with pytest.raises(FilesystemError, match=message):
        ext.probe(BytesSource(patched(data, offset, "<I", value)))


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "message"),
    [
        (0x18, "<I", 7, "block size"),
        (0x20, "<I", 4, "blocks per group"),
        (0x24, "<I", 12, "clusters per group"),
        (0x00, "<I", 17, "inode count"),
        (0x04, "<I", 1, "block count"),
        (0x14, "<I", 0, "first data block"),
        (0x58, "<H", 100, "inode size"),
        (0xCE, "<H", 4000, "reserved GDT blocks"),
        (0x4C, "<I", 2, "revision"),
    ],
)
def test_impossible_superblocks_are_refused(
    *, tiny: dict[str, bytes], offset: int, fmt: str, value: int, message: str
) -> None:
    with pytest.raises(FilesystemError, match=message):
        ext.probe(BytesSource(patched(tiny["ext4-1k"], offset, fmt, value), "bad"))


def test_descriptor_pointing_outside_is_refused(tiny: dict[str, bytes]) -> None:
    data = bytearray(tiny["ext2"])  # no checksums: the range check must catch it
    struct.pack_into("<I", data, 2048 + 32, 10**6)  # group 1's block bitmap
    with pytest.raises(FilesystemError, match="group descriptor 1: block bitmap"):
        ext.probe(BytesSource(bytes(data)))


# Fuzzing: mutated superblocks, descriptors and journals; every answer sane, or a refusal.


class Patched:
    """A ByteSource over ``base`` with bytes replaced, failing the test on reads past the end."""

    def __init__(self, base: bytes, patches: dict[int, int], size: int) -> None:
        self._base, self._patches, self._size = base, patches, size

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        return "fuzzed"

    def pread(self, length: int, offset: int) -> bytes:
        assert offset >= 0 and length >= 0 and offset + length <= self._size, (offset, length)
        chunk = bytearray(self._base[offset : offset + length])
        for pos, value in self._patches.items():
            if offset <= pos < offset + length:
                chunk[pos - offset] = value
        return bytes(chunk)


def regions(data: bytes) -> dict[str, range]:
    """Byte ranges worth mutating: superblock, descriptors, the journal inode and log start."""
    sb = ext_layout.parse_superblock(data[SB : SB + 1024])
    bs = 1024 << sb.log_block_size
    gdt = (SB // bs + 1) * bs
    found = {"superblock": range(SB, SB + 1024), "descriptors": range(gdt, gdt + 1024)}
    if sb.feature_compat & ext_layout.COMPAT_HAS_JOURNAL:
        desc_size = sb.desc_size if sb.feature_incompat & ext_layout.INCOMPAT_64BIT else 32
        desc = ext_layout.parse_descriptors(data[gdt : gdt + desc_size], desc_size, 1)[0]
        inode = desc.inode_table * bs + 7 * sb.inode_size  # inode 8
        found["journal inode"] = range(inode, inode + 128)
        i_block = data[inode + 0x28 : inode + 0x28 + 60]
        extents_fl = struct.unpack_from("<I", data, inode + 0x20)[0] & 0x80000
        start = struct.unpack_from("<I", i_block, 20 if extents_fl else 0)[0]
        found["journal log"] = range(start * bs, start * bs + 4 * bs)
    return found


FUZZ = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FUZZ_BASES = ("ext2", "ext4", "ext4-uninit", "ext3", "crash")


@FUZZ
@given(data=st.data())
def test_fuzzed_metadata_gives_sane_map_or_refusal(
    tiny: dict[str, bytes], data: st.DataObject
) -> None:
    base = tiny[data.draw(st.sampled_from(FUZZ_BASES), label="base")]
    places = regions(base)
    patches: dict[int, int] = {}
    for _ in range(data.draw(st.integers(1, 4), label="regions")):
        where = places[data.draw(st.sampled_from(sorted(places)), label="region")]
        offsets = st.integers(where.start, where.stop - 1)
        patches |= data.draw(st.dictionaries(offsets, st.integers(0, 255), max_size=6))
    if data.draw(st.booleans(), label="redo superblock checksum"):
        sb = bytearray(base[SB : SB + 1024])
        for pos, value in patches.items():
            if SB <= pos < SB + 1024:
                sb[pos - SB] = value
        checksum = ext_layout.superblock_checksum(bytes(sb)).to_bytes(4, "little")
        patches.update({SB + 0x3FC + i: b for i, b in enumerate(checksum)})
    size = data.draw(st.sampled_from([len(base)] * 6 + [len(base) // 2, len(base) - 1024]))
    src = Patched(base, patches, size)
    try:
        volume = ext.probe(src)
    except FilesystemError as exc:
        event(f"refused: {str(exc).split(': ')[-1][:40]}")
        return
    event(f"probed {volume.state.value}")
    assert volume.used == extents.normalize(volume.used)
    assert all(e.length > 0 and e.start >= 0 and e.end <= volume.size for e in volume.used)
    assert 0 < volume.size <= size
    assert volume.used[0] == Extent(0, volume.used[0].length) and volume.used[0].length >= 2048


@FUZZ
@given(raw=st.binary(min_size=1024, max_size=1024), fields=st.data())
def test_random_superblocks_give_sane_map_or_refusal(raw: bytes, fields: st.DataObject) -> None:
    data = bytearray(1 * MiB)
    data[SB : SB + 1024] = raw
    data[SB + 0x38 : SB + 0x3A] = b"\x53\xef"
    for offset in fields.draw(st.lists(st.sampled_from([0x0, 0x4, 0x14, 0x18, 0x20, 0x24, 0x28]))):
        struct.pack_into("<I", data, SB + offset, fields.draw(st.integers(0, 1 << 16)))
    try:
        volume = ext.probe(BytesSource(bytes(data), "random"))
    except FilesystemError:
        return
    assert all(e.start >= 0 and e.end <= volume.size <= len(data) for e in volume.used)
