"""NTFS probe against the truth: partclone.ntfs's map, ntfscluster's free-space count, ntfsinfo,
ntfs-3g's own refusals, ntfsfix, and file hashes read back from a copy holding only our extents.

Oracles. partclone.ntfs -D marks every cluster set in $Bitmap; our map must contain it and add
only the backup boot sector(s). ``ntfscluster -i`` counts free clusters through libntfs: used =
bytes per volume - free bytes must equal our map inside the volume. ntfs-3g refuses a read-write
mount of a hibernated volume and of one whose $LogFile is not clean, which confirms the states we
report; ``ntfsinfo`` shows $MFT's attribute list and the dirty flag independently of our parser.

Images are built once per module with mkntfs and an ntfs-3g FUSE mount (root). Bad-input and
fuzz tests use bare mkntfs images and run without root.
"""

from __future__ import annotations

import os
import random
import re
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clonebay.errors import FilesystemError
from clonebay.fs import extents, ntfs
from clonebay.fs.ntfs_layout import AT_ATTRIBUTE_LIST, AT_DATA, apply_fixups, parse_boot
from clonebay.fs.ntfs_mft import load_mft, parse_attribute_list
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import ByteSource, BytesSource, FileSource
from clonebay.system.run import output, run
from clonebay.testdisks import ntfs as ntfsdisk
from clonebay.testdisks.tree import Tree, small_tree, windows_tree
from tests.oracles import assert_covers, copy_extents, parse_domain, partclone_used

MiB = 1 << 20
IS_ROOT = os.geteuid() == 0
root = pytest.mark.root
needs_root = pytest.mark.skipif(not IS_ROOT, reason="ntfs-3g FUSE mounts need root")


@dataclass(frozen=True)
class Built:
    name: str
    image: Path
    tree: Tree


def probe_file(path: Path, size: int | None = None) -> Volume:
    src = FileSource(str(path), 0, size)
    try:
        return ntfs.probe(src)
    finally:
        src.close()


def _tree_with_stream(root_dir: Path, files: int, seed: int, big: int = 0) -> Tree:
    tree = small_tree(root_dir, files, seed=seed, big_file=big)
    first = sorted(tree.files)[0]
    tree.add_stream(first, "Zone.Identifier", b"[ZoneTransfer]\nZoneId=3\n")
    return tree


def _build(name: str, work: Path) -> Built:
    image = work / f"{name}.img"
    if name == "windows-4k":
        tree = windows_tree(work / "tree", files=5000, pagefile=64 * MiB)
        ntfsdisk.build_ntfs(image, 300 * MiB, tree, label="Windows", start_sector=206848)
    elif name == "clusters-512":
        tree = _tree_with_stream(work / "tree", 400, seed=11)
        ntfsdisk.build_ntfs(image, 64 * MiB, tree, cluster_size=512)
    elif name == "clusters-64k":
        tree = _tree_with_stream(work / "tree", 300, seed=12, big=8 * MiB)
        ntfsdisk.build_ntfs(image, 128 * MiB, tree, cluster_size=64 << 10)
    elif name == "clusters-128k":  # sectors-per-cluster byte 0xF8: a negative exponent
        tree = _tree_with_stream(work / "tree", 200, seed=13)
        ntfsdisk.build_ntfs(image, 128 * MiB, tree, cluster_size=128 << 10)
    elif name == "sectors-4k":  # 4 KiB sectors and MFT records: 8 fixups per record
        tree = _tree_with_stream(work / "tree", 300, seed=14)
        ntfsdisk.build_ntfs(image, 64 * MiB, tree, sector_size=4096, start_sector=256)
    elif name == "fragmented-mft":
        tree = ntfsdisk.build_fragmented_mft(image, work / "tree", size=256 * MiB)
    elif name == "dirty":
        tree = _tree_with_stream(work / "tree", 300, seed=15)
        ntfsdisk.build_ntfs(image, 64 * MiB, tree)
        ntfsdisk.make_dirty(image)
    else:
        raise AssertionError(name)
    return Built(name, image, tree)


VARIANTS = [
    "windows-4k",
    "clusters-512",
    "clusters-64k",
    "clusters-128k",
    "sectors-4k",
    "fragmented-mft",
    "dirty",
]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Built]:
    """Build each variant once per module, on first use."""
    if not IS_ROOT:
        pytest.skip("ntfs-3g FUSE mounts need root")
    cache: dict[str, Built] = {}

    def get(name: str) -> Built:
        if name not in cache:
            cache[name] = _build(name, tmp_path_factory.mktemp(name))
        return cache[name]

    return get


@pytest.fixture(scope="module", params=VARIANTS)
def built(request: pytest.FixtureRequest, images: Callable[[str], Built]) -> Built:
    name: str = request.param
    return images(name)


def partclone_map(image: Path) -> tuple[Extent, ...]:
    """partclone.ntfs -D's map, forced (-F): it refuses dirty volumes otherwise."""
    with tempfile.TemporaryDirectory() as tmp:
        domain = Path(tmp) / "domain"
        run(["partclone.ntfs", "-D", "-F", "-s", str(image), "-o", str(domain), "-q"])
        return parse_domain(domain.read_text())


def ntfscluster_used(image: Path) -> tuple[int, int]:
    """(bytes per volume, bytes in use) as ntfscluster -i counts them through libntfs."""
    text = output(["ntfscluster", "-f", "-i", str(image)])
    fields = dict(re.findall(r"^(\w[\w ]*?)\s*:\s*(\d+)$", text, re.MULTILINE))
    volume = int(fields["bytes per volume"])
    return volume, volume - int(fields["bytes of free space"])


@root
@needs_root
def test_map_covers_partclone(built: Built) -> None:
    ours = probe_file(built.image)
    assert ours.copy is CopyMethod.NATIVE
    assert ours.used == extents.normalize(ours.used)
    oracle = partclone_map(built.image)
    if built.name != "dirty":
        assert oracle == partclone_used(built.image, "ntfs")
    assert_covers(ours.used, oracle)
    extra = extents.subtract(ours.used, oracle)
    assert extents.total(extra) <= 2 * 4096, f"{built.name}: beyond partclone: {extra}"


@root
@needs_root
def test_map_matches_ntfscluster_count(built: Built) -> None:
    ours = probe_file(built.image)
    volume, used = ntfscluster_used(built.image)
    assert extents.total(extents.clip(ours.used, volume)) == used


@root
@needs_root
def test_copy_of_map_is_a_whole_volume(built: Built, tmp_path: Path) -> None:
    ours = probe_file(built.image)
    copy = tmp_path / "copy.img"
    copy_extents(built.image, copy, ours.used)
    ntfsdisk.fsck(copy)
    assert ntfsdisk.file_hashes(copy, streams=True) == ntfsdisk.expected_hashes(
        built.tree, streams=True
    )
    again = probe_file(copy)
    assert again.used == ours.used
    assert (again.label, again.uuid, again.state) == (ours.label, ours.uuid, ours.state)


@root
@needs_root
def test_identity_matches_blkid(built: Built) -> None:
    ours = probe_file(built.image)
    tags = output(["blkid", "-p", "-o", "export", str(built.image)])
    found = dict(line.split("=", 1) for line in tags.splitlines() if "=" in line)
    assert found["TYPE"] == "ntfs"
    assert found["UUID"] == ours.uuid
    assert found.get("LABEL", "") == ours.label


@pytest.fixture(scope="module")
def fragmented(images: Callable[[str], Built]) -> Built:
    return images("fragmented-mft")


@root
@needs_root
def test_fragmented_mft_has_many_runs_and_an_attribute_list(fragmented: Built) -> None:
    with FileSource(str(fragmented.image)) as src:
        boot = parse_boot(src.pread(512, 0), src.name)
        mft = load_mft(src, boot)
        record0 = mft.record(0)
    assert len(mft.stream.runs) > 100
    assert any(a.type == AT_ATTRIBUTE_LIST for a in record0.attributes)
    assert sum(1 for a in record0.attributes if a.type == AT_DATA) == 1  # the rest is elsewhere
    dump = output(["ntfsinfo", "-f", "-v", "-i", "0", str(fragmented.image)])
    assert "Dumping attribute $ATTRIBUTE_LIST (0x20) from mft record 0" in dump
    assert mft.record_count * boot.record_size == mft.stream.data_size


@root
@needs_root
def test_dirty_volume(images: Callable[[str], Built], tmp_path: Path) -> None:
    image = _copy_of(images("dirty"), tmp_path)
    volume = probe_file(image)
    assert volume.state is VolumeState.DIRTY and volume.copy is CopyMethod.NATIVE
    assert any("dirty flag" in note for note in volume.notes)
    assert "Volume Flags: 0x0001" in output(["ntfsinfo", "-f", "-m", str(image)])
    run(["ntfsfix", "-d", str(image)])  # clears the flag: the volume is clean again
    assert probe_file(image).state is VolumeState.CLEAN


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A volume whose root folder is big enough for INDX blocks (hiberfil.sys is looked up)."""
    if not IS_ROOT:
        pytest.skip("ntfs-3g FUSE mounts need root")
    work = tmp_path_factory.mktemp("small")
    tree = small_tree(work / "tree", 100, seed=21)
    for i in range(300):
        tree.add_file(f"ROOT{i:04d}.TXT", f"root file {i}\n".encode())
    image = work / "small.img"
    ntfsdisk.build_ntfs(image, 64 * MiB, tree)
    return Built("small", image, tree)


def _copy_of(built: Built, tmp_path: Path) -> Path:
    copy = tmp_path / f"{built.name}-copy.img"
    copy.write_bytes(built.image.read_bytes())
    return copy


@root
@needs_root
def test_hibernated_volume_is_copied_raw(small: Built, tmp_path: Path) -> None:
    image = _copy_of(small, tmp_path)
    ntfsdisk.add_hiberfil(image, b"HIBR")
    volume = probe_file(image)
    assert volume.copy is CopyMethod.RAW and volume.state is VolumeState.HIBERNATED
    assert volume.used == (Extent(0, image.stat().st_size),)
    assert "hiberfil.sys" in volume.reason
    # ntfs-3g agrees: it refuses to mount the volume read-write.
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = run(["ntfs-3g", str(image), str(mnt)], check=False)
    if proc.returncode == 0:
        run(["umount", str(mnt)])
    assert b"Windows is hibernated" in proc.stderr


@root
@needs_root
@pytest.mark.parametrize("magic", [b"wake", b"\0\0\0\0"])
def test_resumed_hiberfil_is_native(small: Built, tmp_path: Path, magic: bytes) -> None:
    image = _copy_of(small, tmp_path)
    ntfsdisk.add_hiberfil(image, magic, size=64 << 10)
    volume = probe_file(image)
    assert volume.copy is CopyMethod.NATIVE and volume.state is VolumeState.CLEAN


def _restart_page(clean: bool, lsn: int, file_size: int) -> bytes:
    """A $LogFile restart page (ntfs-3g logfile.h: RESTART_PAGE_HEADER, RESTART_AREA, one
    LOG_CLIENT_RECORD named "NTFS"), fixups applied, as Windows leaves it."""
    page = bytearray(4096)
    ra_ofs, ca_ofs, client_size = 0x30, 0x30, 0xA0
    struct.pack_into("<4sHHQIIHhh", page, 0, b"RSTR", 0x1E, 9, 0, 4096, 4096, ra_ofs, 1, 1)
    flags = 0x0002 if clean else 0
    struct.pack_into(
        "<QHHHHIHHqIHHI",
        page,
        ra_ofs,
        lsn,
        1,  # log clients
        0xFFFF,  # free list: none
        0,  # in-use list: client 0
        flags,
        67 - file_size.bit_length(),  # sequence number bits, as ntfs-3g checks them
        ca_ofs + client_size,
        ca_ofs,
        file_size,
        0,
        0x30,  # log record header length
        0x40,  # log page data offset
        1,
    )
    client = ra_ofs + ca_ofs
    struct.pack_into("<QQHHH6xI", page, client, lsn, lsn, 0xFFFF, 0xFFFF, 1, 8)
    page[client + 0x20 : client + 0x28] = "NTFS".encode("utf-16-le")
    usn = b"\x01\x00"
    page[0x1E:0x20] = usn
    for i in range(1, 9):
        end = i * 512
        page[0x1E + 2 * i : 0x20 + 2 * i] = page[end - 2 : end]
        page[end - 2 : end] = usn
    return bytes(page)


def _write_logfile_restart(image: Path, clean: bool) -> None:
    with FileSource(str(image)) as src:
        boot = parse_boot(src.pread(512, 0), src.name)
        log = load_mft(src, boot).data(2)
    first = log.runs[0]
    assert first.lcn is not None and first.length * boot.cluster_size >= 8192
    page = _restart_page(clean, lsn=0x123456, file_size=log.data_size)
    with open(image, "r+b") as f:
        for offset in (0, 4096):
            os.pwrite(f.fileno(), page, first.lcn * boot.cluster_size + offset)


@root
@needs_root
def test_unclean_logfile_means_dirty_and_raw(small: Built, tmp_path: Path) -> None:
    """Records still to replay may allocate clusters no bitmap or MFT record shows yet: only a
    raw copy carries them (safety audit finding 15)."""
    image = _copy_of(small, tmp_path)
    _write_logfile_restart(image, clean=False)
    volume = probe_file(image)
    assert volume.state is VolumeState.DIRTY and volume.copy is CopyMethod.RAW
    assert volume.used == (Extent(0, image.stat().st_size),)
    assert "$LogFile not clean" in volume.reason and "records to replay" in volume.reason
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = run(["ntfs-3g", str(image), str(mnt)], check=False)
    if proc.returncode == 0:
        run(["umount", str(mnt)])
    assert b"unclean file system" in proc.stderr  # ntfs-3g reads the same restart area


@root
@needs_root
def test_clean_logfile_restart_area(small: Built, tmp_path: Path) -> None:
    image = _copy_of(small, tmp_path)
    _write_logfile_restart(image, clean=True)
    assert probe_file(image).state is VolumeState.CLEAN
    with ntfsdisk.mounted(image):  # ntfs-3g accepts it read-write
        pass


# --- bad input, on bare mkntfs images (no root needed) ---


@pytest.fixture(scope="module")
def blank(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    image = tmp_path_factory.mktemp("blank") / "blank.img"
    ntfsdisk.make_ntfs(image, 8 * MiB, label="BLANK")
    return image.read_bytes()


def _record_offset(data: bytes, number: int) -> tuple[int, int]:
    src = BytesSource(data, "blank")
    boot = parse_boot(data[:512], "blank")
    mft = load_mft(src, boot)
    run0 = mft.stream.runs[0]
    assert (
        run0.lcn is not None and (number + 1) * boot.record_size <= run0.length * boot.cluster_size
    )
    return run0.lcn * boot.cluster_size + number * boot.record_size, boot.record_size


def patch_record(data: bytes, number: int, change: Callable[[bytearray], None]) -> bytes:
    """Undo the record's fixups, let ``change`` edit it, redo the fixups (a consistent edit)."""
    offset, size = _record_offset(data, number)
    record = bytearray(data[offset : offset + size])
    apply_fixups(record, (b"FILE",), "test")
    change(record)
    usa_ofs = struct.unpack_from("<H", record, 4)[0]
    usn = record[usa_ofs : usa_ofs + 2]
    for i in range(1, size // 512 + 1):
        end = i * 512
        record[usa_ofs + 2 * i : usa_ofs + 2 * i + 2] = record[end - 2 : end]
        record[end - 2 : end] = usn
    return data[:offset] + bytes(record) + data[offset + size :]


def attribute_at(record: bytearray, atype: int) -> int:
    pos = int(struct.unpack_from("<H", record, 0x14)[0])
    for _ in range(64):
        found, length = struct.unpack_from("<II", record, pos)
        if found == atype:
            return pos
        pos += length
    raise AssertionError(f"no attribute {atype:#x}")


def probe_bytes(data: bytes) -> Volume:
    return ntfs.probe(BytesSource(data, "test.img"))


def test_blank_volume(blank: bytes) -> None:
    volume = probe_bytes(blank)
    assert (volume.fstype, volume.label, volume.block_size) == ("ntfs", "BLANK", 4096)
    assert volume.state is VolumeState.CLEAN
    assert volume.uuid == f"{struct.unpack_from('<Q', blank, 0x48)[0]:016X}"
    assert Extent(len(blank) - 512, 512) in volume.used  # the backup boot sector


def test_detect_and_bitlocker(blank: bytes) -> None:
    assert ntfs.detect(blank[:4096])
    bitlocker = blank[:3] + b"-FVE-FS-" + blank[11:4096]
    assert not ntfs.detect(bitlocker) and ntfs.is_bitlocker(bitlocker)
    assert not ntfs.is_bitlocker(blank[:4096])
    with pytest.raises(FilesystemError, match="BitLocker"):
        probe_bytes(bitlocker + blank[4096:])


def test_garbage_boot_sector(blank: bytes) -> None:
    garbage = bytearray(random.Random(1).randbytes(512))
    garbage[3:11] = b"NTFS    "
    with pytest.raises(FilesystemError, match="boot sector"):
        probe_bytes(bytes(garbage) + blank[512:])


def test_truncated_partition(blank: bytes) -> None:
    with pytest.raises(FilesystemError, match="truncated partition"):
        probe_bytes(blank[: len(blank) // 2])


def test_record_size_mismatch(blank: bytes) -> None:
    data = bytearray(blank)
    data[0x40] = 0xF5  # 2 KiB records, while mkntfs wrote 1 KiB ones
    with pytest.raises(FilesystemError, match="MFT record 0"):
        probe_bytes(bytes(data))


def test_flipped_fixup_in_bitmap_record(blank: bytes) -> None:
    offset, _ = _record_offset(blank, 6)
    data = bytearray(blank)
    data[offset + 1023] ^= 0x10  # the check value at the end of the record's second sector
    with pytest.raises(FilesystemError, match=r"MFT record 6.*update sequence mismatch"):
        probe_bytes(bytes(data))


def test_corrupt_attribute_in_bitmap_record(blank: bytes) -> None:
    def bad_length(record: bytearray) -> None:
        pos = attribute_at(record, AT_DATA)
        struct.pack_into("<I", record, pos + 4, 0x1234)

    with pytest.raises(FilesystemError, match=r"MFT record 6.*invalid length"):
        probe_bytes(patch_record(blank, 6, bad_length))


def _bitmap_runlist(change: Callable[[bytearray, int], None]) -> Callable[[bytearray], None]:
    def edit(record: bytearray) -> None:
        pos = attribute_at(record, AT_DATA)
        change(record, pos)

    return edit


def test_bitmap_run_past_volume_end(blank: bytes) -> None:
    def far_lcn(record: bytearray, pos: int) -> None:
        mp = pos + struct.unpack_from("<H", record, pos + 0x20)[0]
        assert record[mp] >> 4 <= 3  # offset field of at most 3 bytes
        record[mp] = (record[mp] & 0x0F) | 0x30
        lcn_at = mp + 1 + (record[mp] & 0x0F)
        record[lcn_at : lcn_at + 3] = (0x7FFF00).to_bytes(3, "little")
        record[lcn_at + 3] = 0  # end of the runlist

    with pytest.raises(FilesystemError, match="past the end of the volume"):
        probe_bytes(patch_record(blank, 6, _bitmap_runlist(far_lcn)))


def test_bitmap_shorter_than_volume(blank: bytes) -> None:
    def short(record: bytearray, pos: int) -> None:
        struct.pack_into("<qq", record, pos + 0x30, 16, 16)  # data and initialized size

    with pytest.raises(FilesystemError, match="shorter than"):
        probe_bytes(patch_record(blank, 6, _bitmap_runlist(short)))


def test_compressed_bitmap(blank: bytes) -> None:
    def compressed(record: bytearray, pos: int) -> None:
        struct.pack_into("<H", record, pos + 0x0C, 0x0001)

    with pytest.raises(FilesystemError, match="compressed"):
        probe_bytes(patch_record(blank, 6, _bitmap_runlist(compressed)))


def test_dirty_flag_from_volume_information(blank: bytes) -> None:
    def dirty(record: bytearray) -> None:
        pos = attribute_at(record, 0x70)
        value = pos + struct.unpack_from("<H", record, pos + 0x14)[0]
        struct.pack_into("<H", record, value + 10, 0x0001)

    volume = probe_bytes(patch_record(blank, 3, dirty))
    assert volume.state is VolumeState.DIRTY and volume.copy is CopyMethod.NATIVE


# --- fuzzing: any mutation gives a sane Volume or FilesystemError, never a crash or hang ---


def assert_sane(volume: Volume, size: int) -> None:
    assert volume.used == extents.normalize(volume.used)
    assert all(e.start >= 0 and e.end <= size for e in volume.used)
    assert volume.size <= size


def _mutate(data: bytes, edits: list[tuple[int, int, int]], regions: list[Extent]) -> bytes:
    out = bytearray(data)
    for region_index, offset, value in edits:
        region = regions[region_index % len(regions)]
        out[region.start + offset % region.length] = value
    return bytes(out)


def _regions(data: bytes) -> list[Extent]:
    """The boot sector, MFT records 0-15 and the first $Bitmap and $LogFile bytes."""
    boot = parse_boot(data[:512], "fuzz")
    mft_at = boot.mft_lcn * boot.cluster_size
    regions = [Extent(0, 512), Extent(mft_at, 16 * boot.record_size)]
    mft = load_mft(BytesSource(data), boot)
    for number in (2, 6):  # $LogFile, $Bitmap
        first = mft.data(number).runs
        if first and first[0].lcn is not None:
            regions.append(Extent(first[0].lcn * boot.cluster_size, 512))
    return regions


edit_lists = st.lists(
    st.tuples(st.integers(0, 15), st.integers(0, 1 << 20), st.integers(0, 255)),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(edits=edit_lists)
def test_fuzz_mutated_structures(blank: bytes, edits: list[tuple[int, int, int]]) -> None:
    data = _mutate(blank, edits, _regions(blank))
    try:
        volume = probe_bytes(data)
    except FilesystemError:
        return
    assert_sane(volume, len(data))


class PatchedSource:
    """A ByteSource over a file with some bytes replaced (fuzzing a large image cheaply)."""

    def __init__(self, base: ByteSource, patches: dict[int, int]) -> None:
        self._base = base
        self._patches = patches

    @property
    def size(self) -> int:
        return self._base.size

    @property
    def name(self) -> str:
        return "patched"

    def pread(self, length: int, offset: int) -> bytes:
        data = bytearray(self._base.pread(length, offset))
        for pos, value in self._patches.items():
            if offset <= pos < offset + length:
                data[pos - offset] = value
        return bytes(data)


@root
@needs_root
def test_fuzz_fragmented_mft(fragmented: Built) -> None:
    """Mutations of record 0, its attribute list and its extension record."""
    with FileSource(str(fragmented.image)) as base:
        boot = parse_boot(base.pread(512, 0), "frag")
        mft = load_mft(base, boot)
        record0 = mft.record(0)
        regions = [Extent(boot.mft_lcn * boot.cluster_size, boot.record_size)]
        (alist,) = [a for a in record0.attributes if a.type == AT_ATTRIBUTE_LIST]
        assert alist.runs and alist.runs[0].lcn is not None
        regions.append(Extent(alist.runs[0].lcn * boot.cluster_size, 512))
        entries = parse_attribute_list(mft.attribute_list_value(alist, 0), "frag")
        first = mft.stream.runs[0]
        assert first.lcn is not None
        for number in sorted({e.record for e in entries} - {0}):
            assert (number + 1) * boot.record_size <= first.length * boot.cluster_size
            at = first.lcn * boot.cluster_size + number * boot.record_size
            regions.append(Extent(at, boot.record_size))

        @settings(max_examples=60, deadline=None)
        @given(edits=edit_lists)
        def check(edits: list[tuple[int, int, int]]) -> None:
            patches = {}
            for region_index, offset, value in edits:
                region = regions[region_index % len(regions)]
                patches[region.start + offset % region.length] = value
            try:
                volume = ntfs.probe(PatchedSource(base, patches))
            except FilesystemError:
                return
            assert_sane(volume, base.size)

        check()
