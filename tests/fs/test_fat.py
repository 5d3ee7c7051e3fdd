"""FAT probe against the truth: mtools' cluster chains, partclone.fat's map, blkid, fsck.fat, and
file hashes read back from a copy that holds only our extents.

Oracles. ``mtools_map`` is independent of our parser: the geometry comes from ``fsck.fat -v``
and the clusters from ``mshowfat`` (the chain of every file and folder, and of the FAT32 root),
so on a clean volume our map must equal it exactly. partclone.fat's map is the reference for
FAT16/32. For FAT12 it is wrong: partclone 0.3.23 misdecodes the packed 12-bit entries (on the
fat12 variant its map misses 55 allocated clusters, 110 KiB of file data, and marks 334 KiB of
free space), so FAT12 is checked against mtools, fsck.fat and the file hashes only. partclone
also marks the sectors after the last whole cluster (fewer than one cluster; no structure lives
there, and we do not copy them); those are taken out of its map before comparing.
"""

from __future__ import annotations

import random
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from clonebay.errors import FilesystemError
from clonebay.fs import extents, fat
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import BytesSource, FileSource
from clonebay.system.run import output, run
from clonebay.testdisks import fat as fatdisk
from clonebay.testdisks.tree import small_tree
from tests.oracles import assert_covers, copy_extents, partclone_used

MiB = 1 << 20


@dataclass(frozen=True)
class Built:
    name: str
    image: fatdisk.FatImage
    volume: Volume


@dataclass(frozen=True)
class FsckGeometry:
    """What ``fsck.fat -v`` says about a volume's layout."""

    sector_size: int
    cluster_size: int
    data_offset: int
    clusters: int
    sectors: int

    @property
    def data_end(self) -> int:
        return self.data_offset + self.clusters * self.cluster_size


def fsck_geometry(image: Path) -> FsckGeometry:
    text = output(["fsck.fat", "-n", "-v", str(image)])

    def number(pattern: str) -> int:
        found = re.search(pattern, text)
        assert found, f"fsck.fat -v output lacks {pattern!r}:\n{text}"
        return int(found.group(1))

    return FsckGeometry(
        sector_size=number(r"(\d+) bytes per logical sector"),
        cluster_size=number(r"(\d+) bytes per cluster"),
        data_offset=number(r"Data area starts at byte (\d+)"),
        clusters=number(r"(\d+) data clusters"),
        sectors=number(r"(\d+) sectors total"),
    )


def chain_runs(text: str) -> list[tuple[int, int]]:
    """Cluster runs [first, last] in mshowfat output ("::/a <2-4> <8>")."""
    return [(int(a), int(b or a)) for a, b in re.findall(r"<(\d+)(?:-(\d+))?>", text)]


def mtools_map(image: Path) -> tuple[Extent, ...]:
    """Everything before the data region, plus every cluster on some chain, according to mtools."""
    geo = fsck_geometry(image)
    paths = ["::/"] + ["::/" + p.rstrip("/") for p in fatdisk.listing(image)]
    runs = [Extent(0, geo.data_offset)]
    for i in range(0, len(paths), 300):
        text = fatdisk.mtools("mshowfat", image, *paths[i : i + 300])
        runs += [
            Extent(geo.data_offset + (a - 2) * geo.cluster_size, (b - a + 1) * geo.cluster_size)
            for a, b in chain_runs(text)
        ]
    return extents.normalize(runs)


def probe_file(path: Path) -> Volume:
    with FileSource(str(path)) as src:
        assert fat.detect(src.pread(min(src.size, 65536), 0))
        return fat.probe(src)


@pytest.fixture(scope="module", params=sorted(fatdisk.VARIANTS))
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp(request.param)
    image = fatdisk.VARIANTS[request.param](work / "fat.img", work)
    return Built(request.param, image, probe_file(image.path))


def test_identity_matches_blkid_and_fsck(built: Built) -> None:
    volume, path = built.volume, built.image.path
    found = dict(
        line.split("=", 1)
        for line in output(["blkid", "-p", "-o", "export", str(path)]).splitlines()
    )
    geo = fsck_geometry(path)
    assert volume.fstype == f"fat{built.image.fat_bits}"
    assert found["VERSION"] == f"FAT{built.image.fat_bits}"
    assert (volume.uuid, volume.label) == (found["UUID"], found.get("LABEL", ""))
    assert (volume.copy, volume.state, volume.notes) == (CopyMethod.NATIVE, VolumeState.CLEAN, ())
    assert volume.block_size == geo.cluster_size
    assert volume.size == geo.sectors * geo.sector_size


def test_map_equals_mtools_chains(built: Built) -> None:
    assert built.volume.used == mtools_map(built.image.path)


def test_map_covers_partclone(built: Built) -> None:
    if built.image.fat_bits == 12:
        pytest.skip("partclone.fat misreads FAT12 (see module docstring); mtools is the oracle")
    geo = fsck_geometry(built.image.path)
    volume_end = geo.sectors * geo.sector_size
    assert 0 <= volume_end - geo.data_end < geo.cluster_size
    tail = Extent(geo.data_end, volume_end - geo.data_end)
    oracle = extents.subtract(partclone_used(built.image.path, "fat"), [tail])
    assert_covers(built.volume.used, oracle)


def test_copy_of_map_is_a_whole_filesystem(built: Built, tmp_path: Path) -> None:
    copy = tmp_path / "copy.img"
    copy_extents(built.image.path, copy, built.volume.used)
    fatdisk.fsck(copy)
    assert fatdisk.file_hashes(copy) == built.image.files
    assert probe_file(copy) == built.volume


def test_fragmented_variant_is_fragmented(tmp_path: Path) -> None:
    """The variant is what it claims: split chains and scattered free space."""
    image = fatdisk.build_fragmented(tmp_path / "frag.img", tmp_path)
    texts = [fatdisk.mtools("mshowfat", image.path, "::/" + name) for name in sorted(image.files)]
    assert sum(len(chain_runs(t)) > 1 for t in texts) >= 10
    assert len(probe_file(image.path).used) >= 30


# Small images patched in memory, for states and damage.


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[int, bytes]:
    """A FAT12, FAT16 and FAT32 image with a few files, as bytes."""
    work = tmp_path_factory.mktemp("small")
    tree = small_tree(work / "tree", files=40)
    sizes = {12: (4 * MiB, None), 16: (16 * MiB, 2048), 32: (40 * MiB, 512)}
    images = {}
    for bits, (size, cluster) in sizes.items():
        path = work / f"fat{bits}.img"
        fatdisk.make_fat(path, size, bits, cluster_size=cluster, label=f"SMALL{bits}")
        fatdisk.copy_tree(path, tree)
        images[bits] = path.read_bytes()
    return images


def layout(data: bytes | bytearray) -> fat.Geometry:
    return fat.parse_boot_sector(bytes(data[:512]), len(data), "test")


def set_entry(data: bytearray, geo: fat.Geometry, cluster: int, value: int, copies: range) -> None:
    """Write FAT entry ``cluster`` in the given FAT copies (FAT12 keeps the neighbour's nibble)."""
    for copy in copies:
        base = geo.fat_offset + copy * geo.fat_size
        if geo.fat_bits == 12:
            pos = base + cluster * 3 // 2
            pair = int.from_bytes(data[pos : pos + 2], "little")
            pair = (pair & 0x000F) | value << 4 if cluster & 1 else (pair & 0xF000) | value
            data[pos : pos + 2] = pair.to_bytes(2, "little")
        else:
            width = geo.fat_bits // 8
            data[base + cluster * width : base + (cluster + 1) * width] = value.to_bytes(
                width, "little"
            )


def first_free(volume: Volume, geo: fat.Geometry) -> int:
    """A free cluster after the used ones."""
    return (volume.used[-1].end - geo.data_offset) // geo.cluster_size + 2 + 3


def write_and_fsck(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "patched.img"
    path.write_bytes(data)
    fatdisk.fsck(path)


@pytest.mark.parametrize("bits", [16, 32])
def test_dirty_bit_in_fat(small: dict[int, bytes], bits: int) -> None:
    data = bytearray(small[bits])
    geo = layout(data)
    clean = fat.probe(BytesSource(bytes(data)))
    set_entry(data, geo, 1, {16: 0x7FFF, 32: 0x07FFFFFF}[bits], range(2))
    dirty = fat.probe(BytesSource(bytes(data)))
    assert (clean.state, dirty.state) == (VolumeState.CLEAN, VolumeState.DIRTY)
    assert (dirty.copy, dirty.used) == (CopyMethod.NATIVE, clean.used)
    assert any("dirty" in note for note in dirty.notes)


@pytest.mark.parametrize("bits", [12, 16, 32])
def test_dirty_flag_in_boot_sector(small: dict[int, bytes], bits: int) -> None:
    data = bytearray(small[bits])
    data[65 if bits == 32 else 37] |= 1  # BS_Reserved1, set by Linux while mounted
    assert fat.probe(BytesSource(bytes(data))).state == VolumeState.DIRTY


@pytest.mark.parametrize("bits", [16, 32])
def test_hard_error_bit_is_noted(small: dict[int, bytes], bits: int) -> None:
    data = bytearray(small[bits])
    set_entry(data, layout(data), 1, {16: 0xBFFF, 32: 0x0BFFFFFF}[bits], range(2))
    volume = fat.probe(BytesSource(bytes(data)))
    assert volume.state == VolumeState.CLEAN
    assert volume.notes == ("the FAT records disk I/O errors on this volume (hard-error bit)",)


@pytest.mark.parametrize("bits", [12, 16, 32])
def test_label_from_root_directory_then_boot_sector(small: dict[int, bytes], bits: int) -> None:
    data = bytearray(small[bits])
    geo = layout(data)
    data[71 if bits == 32 else 43 : 82 if bits == 32 else 54] = b"BOOTSECTOR "  # BS_VolLab
    assert fat.probe(BytesSource(bytes(data))).label == f"SMALL{bits}"  # blkid's LABEL too
    root = (
        geo.root_offset
        if bits != 32
        else geo.data_offset + (geo.root_cluster - 2) * geo.cluster_size
    )
    assert data[root + 11] == 0x08 and data[root : root + 7] == f"SMALL{bits}".encode()
    data[root] = 0xE5  # delete the volume-ID entry
    assert fat.probe(BytesSource(bytes(data))).label == "BOOTSECTOR"


@pytest.mark.parametrize("bits", [12, 16, 32])
def test_bad_cluster_is_not_copied(small: dict[int, bytes], bits: int, tmp_path: Path) -> None:
    data = bytearray(small[bits])
    geo = layout(data)
    clean = fat.probe(BytesSource(bytes(data)))
    set_entry(data, geo, first_free(clean, geo), fat.BAD[bits], range(2))
    if bits == 32:  # one cluster fewer free: FSInfo's FSI_Free_Count (offset 488)
        fsinfo = struct.unpack_from("<H", data, 48)[0] * geo.sector_size + 488
        struct.pack_into("<I", data, fsinfo, struct.unpack_from("<I", data, fsinfo)[0] - 1)
    write_and_fsck(tmp_path, bytes(data))  # fsck.fat agrees the volume is sound
    volume = fat.probe(BytesSource(bytes(data)))
    assert volume.used == clean.used
    assert volume.notes == ("1 clusters marked bad in the FAT are not copied",)


@pytest.mark.parametrize("bits", [12, 16, 32])
def test_differing_fat_copies_are_united(small: dict[int, bytes], bits: int) -> None:
    data = bytearray(small[bits])
    geo = layout(data)
    clean = fat.probe(BytesSource(bytes(data)))
    extra = first_free(clean, geo)
    set_entry(data, geo, extra, (1 << min(bits, 28)) - 1, range(1, 2))  # end mark, 2nd copy
    volume = fat.probe(BytesSource(bytes(data)))
    cluster = Extent(geo.data_offset + (extra - 2) * geo.cluster_size, geo.cluster_size)
    assert volume.used == extents.normalize([*clean.used, cluster])
    assert any("differ" in note for note in volume.notes)


def test_fat32_mirroring_disabled_uses_active_fat_only(small: dict[int, bytes]) -> None:
    data = bytearray(small[32])
    geo = layout(data)
    clean = fat.probe(BytesSource(bytes(data)))
    set_entry(data, geo, first_free(clean, geo), geo.clusters + 100, range(1))  # damage copy 0
    with pytest.raises(FilesystemError, match="damaged"):
        fat.probe(BytesSource(bytes(data)))
    struct.pack_into("<H", data, 40, 0x81)  # BPB_ExtFlags: no mirroring, FAT 1 active
    assert fat.probe(BytesSource(bytes(data))).used == clean.used


@pytest.mark.parametrize("bits", [12, 16, 32])
@pytest.mark.parametrize("where", ["past-end", "one", "reserved"])
def test_damaged_chain_is_refused(small: dict[int, bytes], bits: int, where: str) -> None:
    data = bytearray(small[bits])
    geo = layout(data)
    value = {"past-end": geo.clusters + 2, "one": 1, "reserved": fat.BAD[bits] - 1}[where]
    set_entry(data, geo, 3, value, range(2))
    with pytest.raises(FilesystemError, match="cluster 3 holds"):
        fat.probe(BytesSource(bytes(data), "damaged"))


def test_fat32_free_root_cluster_is_refused(small: dict[int, bytes]) -> None:
    data = bytearray(small[32])
    set_entry(data, layout(data), 2, 0, range(2))
    with pytest.raises(FilesystemError, match="root directory cluster 2 is marked free"):
        fat.probe(BytesSource(bytes(data)))


@pytest.mark.parametrize("bits", [12, 16, 32])
def test_truncated_volume_is_refused(small: dict[int, bytes], bits: int) -> None:
    data = small[bits]
    with pytest.raises(FilesystemError, match="truncated"):
        fat.probe(BytesSource(data[: len(data) // 2], "half"))


# Boot sectors that are not FAT, or FAT with impossible geometry.


def test_ntfs_is_not_fat(tmp_path: Path) -> None:
    path = tmp_path / "ntfs.img"
    with open(path, "wb") as f:
        f.truncate(16 * MiB)
    run(["mkntfs", "-F", "-Q", "-q", str(path)])
    assert not fat.detect(path.read_bytes()[:65536])
    with pytest.raises(FilesystemError):
        fat.probe(BytesSource(path.read_bytes()))


@pytest.mark.parametrize("oem", [b"-FVE-FS-", b"NTFS    ", b"EXFAT   "])
def test_foreign_oem_id_is_not_fat(small: dict[int, bytes], oem: bytes) -> None:
    data = bytearray(small[32])
    data[3:11] = oem  # a BitLocker (To Go) volume keeps a FAT32-like BPB behind this id
    assert not fat.detect(bytes(data[:65536]))
    with pytest.raises(FilesystemError):
        fat.probe(BytesSource(bytes(data)))


@pytest.mark.parametrize(
    ("bits", "offset", "fmt", "value", "message"),
    [
        (32, 22, "<H", 3, "laid out for FAT12/16"),  # BPB_FATSz16 on FAT32
        (32, 36, "<I", 0, "zero sectors per FAT"),  # BPB_FATSz32
        (16, 19, "<H", 0, "zero total sectors"),  # BPB_TotSec16 (TotSec32 is 0 here)
        (16, 14, "<H", 40000, "data region starts past the end"),  # BPB_RsvdSecCnt
        (16, 17, "<H", 0, "root entries"),  # BPB_RootEntCnt
        (16, 22, "<H", 1, "cannot hold"),  # a one-sector FAT
        (32, 42, "<H", 0x0100, "unknown FAT32 version"),  # BPB_FSVer 1.0
        (32, 44, "<I", 1, "root directory cluster 1 out of range"),  # BPB_RootClus
        (32, 50, "<H", 40, "backup boot sector 40 outside"),  # BPB_BkBootSec
        (32, 32, "<I", 40000, "disagree"),  # BPB_TotSec32: too few clusters for FAT32
        (16, 21, "<B", 0x12, "media byte"),  # BPB_Media
    ],
)
def test_impossible_geometry_is_refused(
    *, small: dict[int, bytes], bits: int, offset: int, fmt: str, value: int, message: str
) -> None:
    data = bytearray(small[bits])
    struct.pack_into(fmt, data, offset, value)
    with pytest.raises(FilesystemError, match=message):
        fat.probe(BytesSource(bytes(data)))


# Fuzzing: mutated boot sectors, FATs and root directories, cut volumes, random BPBs.


class Patched:
    """A ByteSource over ``base`` with single bytes replaced and the size cut, without copying."""

    def __init__(self, base: bytes, patches: dict[int, int], size: int) -> None:
        self._base, self._patches, self._size = base, patches, size

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        return "fuzzed"

    def pread(self, length: int, offset: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise AssertionError(f"read of {length} at {offset} past the end ({self._size})")
        chunk = bytearray(self._base[offset : offset + length])
        for pos, value in self._patches.items():
            if offset <= pos < offset + length:
                chunk[pos - offset] = value
        return bytes(chunk)


def check_sane(volume: Volume, size: int) -> None:
    assert volume.fstype in ("fat12", "fat16", "fat32")
    assert volume.used == extents.normalize(volume.used)
    assert volume.used and volume.used[0].start == 0
    assert all(e.length > 0 and e.end <= size for e in volume.used)
    assert 0 < volume.size <= size and volume.block_size > 0


def probe_or_refuse(src: Patched) -> None:
    head = src.pread(min(src.size, 65536), 0)
    try:
        volume = fat.probe(src)
    except FilesystemError as exc:
        event(f"refused: {str(exc).split(': ')[-1][:40]}")
        return
    event("probed")
    assert fat.detect(head)
    check_sane(volume, src.size)


BPB_FIELDS = [(11, 2), (13, 1), (14, 2), (16, 1), (17, 2), (19, 2), (22, 2), (32, 4), (36, 4),
              (40, 2), (44, 4), (48, 2), (50, 2)]  # fmt: skip
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def entry_patches(base: bytes, geo: fat.Geometry, cluster: int, value: int) -> dict[int, int]:
    """Byte patches that set FAT entry ``cluster`` to ``value`` in every FAT copy."""
    window = bytearray(base[geo.fat_offset : geo.fat_offset + 2 * geo.fat_size])
    moved = fat.Geometry(**{**geo.__dict__, "fat_offset": 0})
    set_entry(window, moved, cluster, value, range(2))
    return {geo.fat_offset + i: b for i, b in enumerate(window) if b != base[geo.fat_offset + i]}


ENTRY_KINDS = ["free", "end", "bad", "link", "past", "any"]


@FUZZ
@given(
    bits=st.sampled_from([12, 16, 32]),
    fields=st.lists(st.tuples(st.sampled_from(BPB_FIELDS), st.integers(0, 2**32 - 1)), max_size=2),
    boot=st.lists(st.tuples(st.integers(3, 89), st.integers(0, 255)), max_size=2),
    entries=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(ENTRY_KINDS), st.integers()),
        max_size=12,
    ),
    root=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.none(), st.none(), st.floats(0, 1)),
)
def test_mutated_volumes(
    *,
    small: dict[int, bytes],
    bits: int,
    fields: list[tuple[tuple[int, int], int]],
    boot: list[tuple[int, int]],
    entries: list[tuple[float, str, int]],
    root: list[tuple[int, int]],
    cut: float | None,
) -> None:
    base = small[bits]
    geo = layout(base)
    patches: dict[int, int] = {}
    for where, kind, number in entries:
        cluster = 2 + int(where * geo.clusters)
        value = {
            "free": 0,
            "end": (1 << min(bits, 28)) - 1,
            "bad": fat.BAD[bits],
            "link": 2 + number % geo.clusters,
            "past": geo.clusters + 2 + number % 16,
            "any": number % (1 << min(bits, 28)),
        }[kind]
        patches |= entry_patches(base, geo, cluster, value)
    root_start = geo.root_offset if bits != 32 else geo.data_offset
    patches |= {root_start + pos: value for pos, value in root}  # the label scan's input
    patches |= dict(boot)
    for (offset, width), value in fields:
        for i in range(width):
            patches[offset + i] = value >> (8 * i) & 0xFF
    size = len(base) if cut is None else int(cut * len(base))
    probe_or_refuse(Patched(base, patches, size))


@FUZZ
@given(
    bps=st.sampled_from([512, 512, 512, 512, 512, 1024, 4096, 3000]),
    spc=st.sampled_from([1, 1, 1, 2, 4, 8, 16, 64, 128, 3]),
    reserved=st.sampled_from([1, 1, 1, 4, 4, 32, 32, 0]),
    nfats=st.sampled_from([1, 2, 2, 2, 2, 2, 2, 4, 0, 5]),
    root_entries=st.sampled_from([0, 16, 512, 512, 65535]),
    total=st.one_of(st.integers(0, 4097), st.integers(0, 4097), st.integers(0, 2**32 - 1)),
    fat_size=st.one_of(st.integers(0, 40), st.integers(0, 70000)),
    fat32=st.booleans(),
    random_fill=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_bpb(
    *,
    bps: int, spc: int, reserved: int, nfats: int, root_entries: int, total: int,
    fat_size: int, fat32: bool, random_fill: bool, seed: int,
) -> None:  # fmt: skip
    rng = random.Random(seed)
    sector = bytearray(rng.randbytes(512))
    struct.pack_into("<3s8xHBHBHHBH", sector, 0, b"\xeb\x58\x90", bps, spc, reserved, nfats,
                     root_entries, total if total < 65536 else 0, 0xF8,
                     0 if fat32 else fat_size % 65536)  # fmt: skip
    struct.pack_into("<I", sector, 32, 0 if total < 65536 else total)
    if fat32:
        struct.pack_into("<IHHI", sector, 36, fat_size, 0, 0, 2)
    sector[510:512] = b"\x55\xaa"
    rest = rng.randbytes(2 * MiB) if random_fill else bytes(2 * MiB)
    volume = bytes(sector) + rest
    probe_or_refuse(Patched(volume, {}, len(volume)))


@FUZZ
@given(sector=st.binary(min_size=512, max_size=512), jump=st.sampled_from([b"\xeb", b"\xe9"]))
def test_garbage_boot_sector(sector: bytes, jump: bytes) -> None:
    volume = jump + sector[1:510] + b"\x55\xaa" + bytes(1 * MiB)
    probe_or_refuse(Patched(volume, {}, len(volume)))
