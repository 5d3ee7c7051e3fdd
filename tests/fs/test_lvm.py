"""LVM2 physical volumes against lvm2's own tools: a PV made by pvcreate/vgcreate/lvcreate on a
loop device, its LVs' filesystems written at the extents ``lvs`` reports (no device-mapper
here: see lvmdisks). The parsed VG equals what ``pvs``/``vgs``/``lvs`` report; the used runs are
exactly [0, pe_start) plus the ext4 LV's used blocks (dumpe2fs as oracle), the swap LV's header
page and the raw LV whole; a copy of only those runs is the same PV to ``pvck``/``vgs``/``lvs``,
with an ext4 that ``e2fsck -fn`` passes and files hashing as built, and zeros where the free
extents held stale data. Thin pools, snapshots, a VG of two PVs and damaged metadata are copied
whole with the reason, never a traceback."""

from __future__ import annotations

import os
import random
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clonebay.fs import extents, lvm_map, lvm_probe
from clonebay.fs import swap as swapfs
from clonebay.fs.ext import probe as ext_probe
from clonebay.fs.lvm_label import LvmError, lvm_crc
from clonebay.fs.lvm_text import MDA_HEADER_SIZE, parse_config
from clonebay.fs.pieced import Piece
from clonebay.fs.probe import probe_volume
from clonebay.model import CopyMethod, Extent, Volume
from clonebay.system.blockdev import ByteSource, BytesSource, FileSource
from clonebay.testdisks import ext as extdisk
from clonebay.testdisks.swap import build_swap
from clonebay.testdisks.tree import Tree
from tests.fs.lvmdisks import (
    LvSegment,
    MiB,
    linear_lv,
    loops,
    lvm,
    lvm_segments,
    read_lv,
    replace_lvs,
    report,
    restore_with,
    write_lv,
)
from tests.fs.test_ext import dumpe2fs_used
from tests.oracles import copy_extents

FIXTURE_HEALTH = HealthCheck.function_scoped_fixture  # built is module-scoped: reused safely
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")
PV_SIZE = 64 * MiB
VG = "cbtestvg"


@dataclass(frozen=True)
class Built:
    pv: Path
    segments: list[LvSegment]
    pe_start: int
    extent_size: int
    ext_image: Path
    tree: Tree
    reports: dict[str, list[dict[str, str]]]
    free: tuple[Extent, ...]  # PV bytes of the unallocated extents (stale random bytes there)
    volume: Volume


def probe_file(path: Path) -> Volume:
    with FileSource(str(path)) as src:
        return probe_volume(src)


FIELDS = {
    "pvs": "pv_uuid,pe_start,pv_pe_count,dev_size",
    "vgs": "vg_name,vg_uuid,vg_extent_size,vg_extent_count,lv_count,pv_count",
    "lvs": "lv_name,lv_uuid,lv_size,seg_start_pe,seg_size_pe,seg_pe_ranges,segtype",
}


def lvm_reports(devices: list[str]) -> dict[str, list[dict[str, str]]]:
    return {p: report(devices, p, f, *([VG] if p != "pvs" else [])) for p, f in FIELDS.items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A PV with LVs lvext (ext4, 20 MiB then 8 MiB more after the others: two segments),
    lvswap (swap) and lvraw (random bytes), and 6 free extents filled with random bytes."""
    work = tmp_path_factory.mktemp("lvm")
    pv = work / "pv.img"
    with open(pv, "wb") as f:
        f.truncate(PV_SIZE)
    rng = random.Random(11)
    tree = Tree(work / "files")
    for i in range(5):
        tree.add_file(f"docs/f{i}.bin", rng.randbytes(rng.randrange(1000, 900_000)))
    tree.add_file("hello.txt", b"lvm on a loop device\n")
    with loops(pv) as devices:
        (dev,) = devices
        lvm(devices, "pvcreate", "-q", "-ff", "-y", dev)
        lvm(devices, "vgcreate", "-q", "-s", "4m", VG, dev)
        for name, size in (("lvext", "20m"), ("lvswap", "4m"), ("lvraw", "8m")):
            lvm(devices, "lvcreate", "-q", "-an", "-Zn", "-L", size, "-n", name, VG)
        lvm(devices, "lvextend", "-q", "-L", "+8m", f"{VG}/lvext")
        segments = lvm_segments(devices, VG)
        reports = lvm_reports(devices)
        free_rows = report(devices, "pvs", "pvseg_start,pvseg_size,lv_name", "--segments")
    pe_start = int(reports["pvs"][0]["pe_start"])
    extent_size = int(reports["vgs"][0]["vg_extent_size"])
    free = extents.normalize(
        Extent(pe_start + int(r["pvseg_start"]) * extent_size, int(r["pvseg_size"]) * extent_size)
        for r in free_rows
        if not r["lv_name"]
    )
    ext_image = extdisk.build_ext(work / "lvext.img", 28 * MiB, tree, "ext4", label="lvroot")
    write_lv(pv, segments, "lvext", ext_image)
    build_swap(work / "swap.img", 4 * MiB, label="lvswap")
    write_lv(pv, segments, "lvswap", work / "swap.img")
    (work / "raw.img").write_bytes(rng.randbytes(8 * MiB))
    write_lv(pv, segments, "lvraw", work / "raw.img")
    with open(pv, "r+b") as f:
        for run in free:
            os.pwrite(f.fileno(), rng.randbytes(run.length), run.start)
    return Built(pv, segments, pe_start, extent_size, ext_image, tree, reports, free,
                 probe_file(pv))  # fmt: skip


def test_parsed_volume_group_equals_lvm_reports(built: Built) -> None:
    with FileSource(str(built.pv)) as src:
        contents = lvm_probe.read_pv(src)
    vg = contents.vg
    assert vg is not None
    (pvs,), (vgs,) = built.reports["pvs"], built.reports["vgs"]
    (pv,) = vg.pvs
    assert (contents.label.uuid, pv.uuid, pv.pe_start, pv.pe_count) == (
        pvs["pv_uuid"], pvs["pv_uuid"], int(pvs["pe_start"]), int(pvs["pv_pe_count"])
    )  # fmt: skip
    assert contents.label.device_size == int(pvs["dev_size"]) == PV_SIZE
    assert (vg.name, vg.uuid, vg.extent_size, len(vg.lvs)) == (
        vgs["vg_name"], vgs["vg_uuid"], int(vgs["vg_extent_size"]), int(vgs["lv_count"])
    )  # fmt: skip
    ours = {
        (lv.name, lv.uuid, lv.extent_count * vg.extent_size, s.start_extent, s.extent_count,
         f"/dev/X:{s.stripes[0].start_pe}-{s.stripes[0].start_pe + s.extent_count - 1}", "linear")
        for lv in vg.lvs
        for s in lv.segments
    }  # fmt: skip
    theirs = {
        (r["lv_name"], r["lv_uuid"], int(r["lv_size"]), int(r["seg_start_pe"]),
         int(r["seg_size_pe"]), re.sub(r"^[^:]*", "/dev/X", r["seg_pe_ranges"]), r["segtype"])
        for r in built.reports["lvs"]
    }  # fmt: skip
    assert ours == theirs
    assert len([s for s in built.segments if s.lv == "lvext"]) == 2  # the map is not trivial


def _lv_runs(built: Built, lv: str, runs: tuple[Extent, ...]) -> tuple[Extent, ...]:
    """LV-relative runs -> PV runs, through the segments lvs reported (not our parser)."""
    pieces = [Piece(s.lv_offset, s.pv_offset, s.length) for s in built.segments if s.lv == lv]
    return lvm_map.through(runs, pieces)


def test_used_runs_are_the_head_and_each_lvs_used_blocks(built: Built) -> None:
    volume = built.volume
    assert (volume.fstype, volume.copy, volume.label) == ("lvm2-pv", CopyMethod.NATIVE, VG)
    with FileSource(str(built.ext_image)) as src:
        ext_map = ext_probe(src).used
    oracle = dumpe2fs_used(built.ext_image)
    assert extents.contains(ext_map, oracle) and extents.total(ext_map) < 28 * MiB // 2
    whole = (Extent(0, 8 * MiB),)
    expected = extents.normalize(
        (
            Extent(0, built.pe_start),
            *_lv_runs(built, "lvext", ext_map),
            *_lv_runs(built, "lvswap", (Extent(0, 4096),)),
            *_lv_runs(built, "lvraw", whole),
        )
    )
    assert volume.used == expected
    assert not extents.intersect(volume.used, built.free)
    notes = "\n".join(volume.notes)
    assert "ext4 'lvroot'" in notes and "swap 'lvswap'" in notes and "LV lvraw" in notes
    assert built.reports["vgs"][0]["vg_uuid"] in notes


def test_copy_of_used_runs_is_the_same_pv(built: Built, tmp_path: Path) -> None:
    copy = tmp_path / "copy.img"
    copy_extents(built.pv, copy, built.volume.used)
    with loops(copy) as devices:
        checked = lvm(devices, "pvck", devices[0])
        reports = lvm_reports(devices)
    assert "Found text metadata area: offset=4096" in checked
    assert reports == built.reports
    ext_copy = read_lv(copy, built.segments, "lvext", tmp_path / "lvext.img")
    extdisk.fsck(ext_copy)
    assert extdisk.file_hashes(ext_copy) == built.tree.files
    with open(copy, "rb") as f:
        assert all(not any(os.pread(f.fileno(), r.length, r.start)) for r in built.free)
    swap_copy = read_lv(copy, built.segments, "lvswap", tmp_path / "swap.img")
    with FileSource(str(swap_copy)) as src:
        assert swapfs.probe(src).label == "lvswap"
    assert probe_file(copy) == built.volume


def _metadata_areas(pvck: str) -> tuple[Extent, ...]:
    found = re.findall(r"Found text metadata area: offset=(\d+), size=(\d+)", pvck)
    return tuple(Extent(int(offset), int(size)) for offset, size in found)


def test_second_metadata_area_at_the_end_is_copied(tmp_path: Path) -> None:
    """pvcreate --pvmetadatacopies 2 puts a metadata area at the end of the PV, past the
    extents: the copy carries it, and pvck finds both on the copy."""
    pv, copy = tmp_path / "pv.img", tmp_path / "copy.img"
    with open(pv, "wb") as f:
        f.truncate(PV_SIZE)
    with loops(pv) as devices:
        lvm(devices, "pvcreate", "-q", "-ff", "-y", "--pvmetadatacopies", "2", devices[0])
        lvm(devices, "vgcreate", "-q", VG, devices[0])
        lvm(devices, "lvcreate", "-q", "-an", "-Zn", "-L", "8m", "-n", "small", VG)
        areas = _metadata_areas(lvm(devices, "pvck", devices[0]))
        vg_uuid = report(devices, "vgs", "vg_uuid", VG)[0]["vg_uuid"]
    assert len(areas) == 2 and areas[1].end == PV_SIZE
    volume = probe_file(pv)
    assert volume.copy is CopyMethod.NATIVE and extents.contains(volume.used, areas)
    copy_extents(pv, copy, volume.used)
    with loops(copy) as devices:
        assert _metadata_areas(lvm(devices, "pvck", devices[0])) == areas
        assert report(devices, "vgs", "vg_uuid", VG)[0]["vg_uuid"] == vg_uuid


def _refused(volume: Volume, *words: str) -> None:
    assert (volume.fstype, volume.copy) == ("lvm2-pv", CopyMethod.RAW), volume
    assert volume.used == (Extent(0, volume.size),)
    for word in words:
        assert word in volume.reason, (word, volume.reason)


def _single_pv(tmp_path: Path, edit: Callable[[str], str]) -> Volume:
    """A fresh PV with two linear LVs, its VG then restored as ``edit`` makes it."""
    pv = tmp_path / "pv.img"
    with open(pv, "wb") as f:
        f.truncate(PV_SIZE)
    with loops(pv) as devices:
        lvm(devices, "pvcreate", "-q", "-ff", "-y", devices[0])
        lvm(devices, "vgcreate", "-q", "-s", "4m", VG, devices[0])
        lvm(devices, "lvcreate", "-q", "-an", "-Zn", "-L", "16m", "-n", "data", VG)
        lvm(devices, "lvcreate", "-q", "-an", "-Zn", "-L", "4m", "-n", "meta", VG)
        restore_with(devices, VG, edit, tmp_path)
        rows = report(devices, "lvs", "lv_name,segtype", "-a", VG)
    assert rows  # lvm accepted the edited metadata
    return probe_file(pv)


UUIDS = ("aaaaaa-bbbb-cccc-dddd-eeee-ffff-gggggg", "hhhhhh-iiii-jjjj-kkkk-llll-mmmm-nnnnnn")


def test_thin_pool_is_copied_whole(tmp_path: Path) -> None:
    def thin(text: str) -> str:
        ids = re.findall(r'\bid = "([^"]+)"', text)[-2:]  # data's and meta's
        pool = (
            f'pool {{\nid = "{UUIDS[0]}"\nstatus = ["READ", "WRITE", "VISIBLE"]\nflags = []\n'
            "segment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 4\n"
            'type = "thin-pool"\nmetadata = "pool_tmeta"\npool = "pool_tdata"\n'
            'transaction_id = 1\nchunk_size = 128\ndiscards = "passdown"\n'
            "zero_new_blocks = 1\n}\n}\n"
            f'thin1 {{\nid = "{UUIDS[1]}"\nstatus = ["READ", "WRITE", "VISIBLE"]\nflags = []\n'
            'segment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 8\ntype = "thin"\n'
            'thin_pool = "pool"\ntransaction_id = 0\ndevice_id = 1\n}\n}\n'
        )
        tdata, tmeta = (
            linear_lv("pool_tdata", ids[0], 4, 0, False),
            linear_lv("pool_tmeta", ids[1], 1, 4, False),
        )
        return replace_lvs(text, tdata + tmeta + pool)

    _refused(_single_pv(tmp_path, thin), "LV pool is a thin pool", "copied whole")


def test_snapshot_is_copied_whole(tmp_path: Path) -> None:
    def snapshot(text: str) -> str:
        ids = re.findall(r'\bid = "([^"]+)"', text)[-2:]
        snap = (
            f'snapshot0 {{\nid = "{UUIDS[0]}"\nstatus = ["READ"]\nflags = []\nsegment_count = 1\n'
            'segment1 {\nstart_extent = 0\nextent_count = 4\ntype = "snapshot"\n'
            'chunk_size = 8\norigin = "data"\ncow_store = "meta"\n}\n}\n'
        )
        lvs = linear_lv("data", ids[0], 4, 0) + linear_lv("meta", ids[1], 1, 4)
        return replace_lvs(text, lvs + snap)

    _refused(_single_pv(tmp_path, snapshot), "LV snapshot0 is a snapshot")


def test_volume_group_of_two_pvs_names_the_other(tmp_path: Path) -> None:
    files = [tmp_path / "a.img", tmp_path / "b.img"]
    for path in files:
        with open(path, "wb") as f:
            f.truncate(PV_SIZE)
    with loops(*files) as devices:
        lvm(devices, "pvcreate", "-q", "-ff", "-y", *devices)
        lvm(devices, "vgcreate", "-q", VG, *devices)
        lvm(devices, "lvcreate", "-q", "-an", "-Zn", "-L", "100m", "-n", "big", VG)
        uuids = {r["pv_name"]: r["pv_uuid"] for r in report(devices, "pvs", "pv_name,pv_uuid")}
    volume = probe_file(files[0])
    _refused(volume, "spans 2 physical volumes", uuids[devices[0]], uuids[devices[1]])
    assert f"last seen as {devices[1]}" in volume.reason


class Patched:
    """A ByteSource: ``src`` with ``data`` written over it at ``offset``."""

    def __init__(self, src: ByteSource, offset: int, data: bytes) -> None:
        self.src, self.offset, self.data = src, offset, data

    @property
    def size(self) -> int:
        return self.src.size

    @property
    def name(self) -> str:
        return "patched"

    def pread(self, length: int, offset: int) -> bytes:
        out = bytearray(self.src.pread(length, offset))
        lo, hi = max(offset, self.offset), min(offset + length, self.offset + len(self.data))
        if lo < hi:
            out[lo - offset : hi - offset] = self.data[lo - self.offset : hi - self.offset]
        return bytes(out)


def _head(built: Built) -> bytearray:
    with open(built.pv, "rb") as f:
        return bytearray(f.read(built.pe_start))


def _with_text(head: bytearray, text: bytes, size: int | None = None) -> bytearray:
    """The PV head with its newest metadata text replaced by ``text`` (checksums made right;
    ``size`` overrides the length the header records)."""
    mda = 4096
    offset = struct.unpack_from("<Q", head, mda + 40)[0]
    head[mda + offset : mda + offset + len(text)] = text
    struct.pack_into("<QQI", head, mda + 40, offset, size or len(text), lvm_crc(text))
    struct.pack_into("<I", head, mda, lvm_crc(bytes(head[mda + 4 : mda + MDA_HEADER_SIZE])))
    return head


def _text(head: bytearray) -> bytes:
    offset, size = struct.unpack_from("<QQ", head, 4096 + 40)
    return bytes(head[4096 + offset : 4096 + offset + size])


def _flip_text(head: bytearray) -> bytearray:
    """One byte of the newest text changed, its checksum left as it was."""
    offset = struct.unpack_from("<Q", head, 4096 + 40)[0]
    head[4096 + offset + 100] ^= 0x20
    return head


DAMAGE: dict[str, tuple[Callable[[bytearray], bytearray], str]] = {
    "label checksum": (lambda h: h[:600] + b"X" + h[601:], "label in sector 1: checksum"),
    "text checksum": (_flip_text, "checksum of the metadata text"),
    "truncated text": (lambda h: _with_text(h, _text(h)[:700]), "not understood at line"),
    "text size past the area": (
        lambda h: _with_text(h, _text(h), size=1 << 40),
        "lies outside the area",
    ),
    "extent count past the device": (
        lambda h: _with_text(h, _text(h).replace(b"pe_count = 15", b"pe_count = 99999")),
        "run past the end",
    ),
    "segment past the PV": (
        lambda h: _with_text(h, re.sub(rb'"pv0", \d+', b'"pv0", 14', _text(h), count=1)),
        "past the PV's 15",
    ),
    "two LVs on one extent": (
        lambda h: _with_text(h, re.sub(rb'"pv0", \d+', b'"pv0", 0', _text(h))),
        "claim the same extents",
    ),
    "header magic": (lambda h: h[:4100] + b"?" + h[4101:], "no metadata header"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_metadata_is_copied_whole_with_where(built: Built, damage: str) -> None:
    edit, words = DAMAGE[damage]
    with FileSource(str(built.pv)) as src:
        volume = probe_volume(Patched(src, 0, bytes(edit(_head(built)))))
    _refused(volume, words)


@settings(max_examples=150, deadline=None, suppress_health_check=[FIXTURE_HEALTH])
@given(st.lists(st.tuples(st.integers(0, 12287), st.integers(0, 255)), min_size=1, max_size=8))
def test_random_damage_never_crashes(built: Built, flips: list[tuple[int, int]]) -> None:
    head = _head(built)[:12288]
    for at, value in flips:
        head[at] = value
    with FileSource(str(built.pv)) as src:
        volume = probe_volume(Patched(src, 0, bytes(head)))
    assert all(e.start >= 0 and e.end <= PV_SIZE for e in volume.used)
    if volume.copy is CopyMethod.NATIVE and volume.fstype == "lvm2-pv":
        assert extents.contains(volume.used, (Extent(0, built.pe_start),))


@settings(max_examples=300, deadline=None, suppress_health_check=[FIXTURE_HEALTH])
@given(st.data())
def test_edited_metadata_text_parses_or_says_where(built: Built, data: st.DataObject) -> None:
    """Any edit of a real VG text either parses into a VG or raises LvmError, nothing else."""
    text = _text(_head(built)).rstrip(b"\0").decode()
    start = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(start, min(len(text), start + 40)))
    insert = data.draw(st.text(alphabet='{}[]=,"#\\ \n09-xa.', max_size=12))
    edited = text[:start] + insert + text[cut:]
    try:
        lvm_map.build(parse_config(edited))
    except LvmError as exc:
        assert exc.message.startswith("LVM metadata")


def test_lvm_partition_type_without_label_stays_a_container() -> None:
    volume = probe_volume(BytesSource(bytes(1 << 20)), "E6D6D379-F507-44C2-A23C-238F2A3DF928")
    assert (volume.fstype, volume.copy) == ("container", CopyMethod.RAW)


def test_lvm_partition_type_with_label_is_mapped(built: Built) -> None:
    with FileSource(str(built.pv)) as src:
        assert probe_volume(src, "0x8e") == built.volume
