"""The Plan at the edges (safety audit findings 2, 7, 8, 11, 14, 15, 19), on tables written by
sgdisk and sfdisk and filesystems made by mkfs.ext4 and mkntfs in sparse files (no root): the
GPT's usable end, MBR's 32-bit sector fields, other logical sector sizes, truncated sources,
volume states, single volumes, and the words of two refusals."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from clonebay.engine.inspect import inspect_disk
from clonebay.engine.layout import limits
from clonebay.engine.layout.plan import Grow, make_plan, plan_layout, volume_plan
from clonebay.errors import PartitionTableError, SafetyError, TargetTooSmallError
from clonebay.model import CopyMethod, Extent, VolumeState
from clonebay.system.parttable import read_table
from clonebay.testdisks import ntfs as ntfsdisk
from clonebay.testdisks.files import sparse_file
from tests.edgedisks import MIB, gpt_disk, layout, mbr_disk, mkext, put
from tests.fs.test_ntfs import _write_logfile_restart

GIB, TIB = 1 << 30, 1 << 40
SECTOR = 512


@pytest.fixture
def full(tmp_path: Path) -> Path:
    """64 MiB, GPT, p1 from sector 2048 to sgdisk's default end (the last usable LBA), ext4."""
    image = gpt_disk(tmp_path / "full.img", 64 * MIB, "1:2048:0")
    start, size = layout(image)[1]
    mkext(image, start * SECTOR, size * SECTOR)
    return image


def _sgdisk_last_lba(image: Path) -> int:
    return read_table(str(image)).last_usable // SECTOR - 1


# --- #11: the GPT usable end --------------------------------------------------------------


def test_partition_at_the_last_usable_lba_fits_an_identical_disk(full: Path) -> None:
    report = inspect_disk(str(full))
    start, size = layout(full)[1]
    assert start + size - 1 == 131038  # sgdisk's default end on 64 MiB: N - 34
    plan = make_plan(report, 64 * MIB)
    assert plan.same_layout and plan.fixups == ()
    assert plan.target_table.last_usable == report.table.last_usable == 131039 * SECTOR
    assert [(m.target_start, m.target_size) for m in plan.moves] == [
        (start * SECTOR, size * SECTOR)
    ]


@pytest.mark.parametrize("size", [64 * MIB, 100 * MIB + 7 * SECTOR, 3 * GIB])
def test_target_usable_end_is_where_sgdisk_puts_it(tmp_path: Path, size: int) -> None:
    image = gpt_disk(tmp_path / "blank.img", size)  # sgdisk -o: its own last usable LBA
    assert limits.target_usable_end("gpt", size, SECTOR) == (_sgdisk_last_lba(image) + 1) * SECTOR


def test_too_small_names_the_bytes_needed(full: Path) -> None:
    """#19: "needs 64.0 MiB" next to "holds 64.0 MiB" said nothing; the byte count does, and it
    is exactly the smallest target that works."""
    report = inspect_disk(str(full))
    with pytest.raises(TargetTooSmallError) as err:
        make_plan(report, 64 * MIB - SECTOR)
    assert f"need 64.0 MiB ({64 * MIB} bytes)" in err.value.message
    assert "nothing was written" in err.value.message
    make_plan(report, 64 * MIB)


def test_missing_backup_gpt_refusal_does_not_promise_the_primary(full: Path) -> None:
    """#19: libparted's "so that will be used" is not what clonebay does: it refuses."""
    with open(full, "r+b") as f:
        os.pwrite(f.fileno(), bytes(33 * SECTOR), 64 * MIB - 33 * SECTOR)
    with pytest.raises(PartitionTableError) as err:
        read_table(str(full))
    assert "will be used" not in err.value.message
    assert "backup GPT" in err.value.message and "nothing was changed" in err.value.message


# --- #8: MBR limits -----------------------------------------------------------------------


@pytest.fixture
def mbr(tmp_path: Path) -> Path:
    image = mbr_disk(tmp_path / "mbr.img", 256 * MIB, "start=2048, size=200MiB, type=83\n")
    start, size = layout(image)[1]
    mkext(image, start * SECTOR, size * SECTOR)
    return image


@pytest.mark.parametrize("grow", [Grow.PROPORTIONAL, Grow.LAST])
def test_mbr_growth_stops_below_2_32_sectors(mbr: Path, grow: Grow) -> None:
    plan = make_plan(inspect_disk(str(mbr)), 3 * TIB, grow)
    (part,) = plan.target_table.partitions
    assert part.start // SECTOR < 1 << 32 and part.size // SECTOR < 1 << 32
    assert part.end <= limits.MBR_MAX_SECTORS * SECTOR
    assert part.end > 2 * TIB - 64 * MIB  # grown up to the limit (the source's 55 MiB tail kept)
    assert plan.moves[0].grow_fs
    assert any("MBR" in n and "stay unused" in n for n in plan.notes)
    assert "stay unused" in plan.text()


def test_mbr_within_the_limit_has_no_note(mbr: Path) -> None:
    plan = make_plan(inspect_disk(str(mbr)), 512 * MIB)
    assert plan.moves[0].grown and plan.notes == ()


def test_mbr_layout_past_2_32_sectors_is_refused(mbr: Path) -> None:
    """An image's table (a manifest) can describe what no MBR can hold: refused in the Plan."""
    table = read_table(str(mbr))
    far = replace(
        table,
        disk_size=3 * TIB,
        partitions=tuple(replace(p, start=(1 << 32) * SECTOR) for p in table.partitions),
    )
    with pytest.raises(SafetyError) as err:
        plan_layout(far, {}, 3 * TIB, Grow.NONE, "the image")
    assert "p1 would have a start of 4294967296 sectors" in err.value.message
    assert "nothing was written" in err.value.message


# --- #7: truncated sources ----------------------------------------------------------------


@pytest.fixture
def truncated(tmp_path: Path) -> Path:
    """The audit's case: p1 is 120 MiB at 1 MiB, the image cut to 100 MiB."""
    image = mbr_disk(tmp_path / "mtrunc.img", 128 * MIB, "start=2048, size=120MiB, type=83\n")
    mkext(image, MIB, 120 * MIB)
    os.truncate(image, 100 * MIB)
    return image


def test_truncated_source_is_refused(truncated: Path) -> None:
    report = inspect_disk(str(truncated))
    with pytest.raises(SafetyError) as err:
        make_plan(report, 256 * MIB, Grow.NONE)
    missing = 121 * MIB - 100 * MIB
    assert f"p1 runs {missing} bytes" in err.value.message
    assert "--allow-truncated" in err.value.message and "nothing was written" in err.value.message


def test_truncated_source_allowed_zeroes_the_tail(truncated: Path) -> None:
    report = inspect_disk(str(truncated))
    plan = make_plan(report, 256 * MIB, allow_truncated=True)
    assert plan.zero_tails == (Extent(100 * MIB, 21 * MIB),)
    assert not plan.moves[0].grown and not plan.moves[0].editable  # raw: never grown or edited
    assert any(n.startswith("p1:") and f"{21 * MIB} bytes" in n for n in plan.notes)


# --- #2: logical sector sizes -------------------------------------------------------------


def test_other_sector_size_refused_with_each_partition_named(tmp_path: Path) -> None:
    image = gpt_disk(tmp_path / "mixed.img", 128 * MIB, "1:2048:+48M", "2:0:0")
    parts = layout(image)
    mkext(image, parts[1][0] * SECTOR, parts[1][1] * SECTOR, block=1024)
    fs = ntfsdisk.make_ntfs(tmp_path / "p2.img", parts[2][1] * SECTOR, start_sector=parts[2][0])
    put(image, fs, parts[2][0] * SECTOR)
    report = inspect_disk(str(image))
    before = image.read_bytes()
    with pytest.raises(SafetyError) as err:
        make_plan(report, 128 * MIB, target_sector_size=4096)
    msg = err.value.message
    assert "p1 (ext4) has 1024-byte blocks; on 4096-byte sectors it could not be mounted" in msg
    assert (
        "p2 (ntfs) records 512-byte sectors in its boot sector; the target has 4096-byte sectors"
        in msg
    )
    assert msg.endswith("refusing; nothing was written")
    assert image.read_bytes() == before


def test_ext4_with_4k_blocks_is_converted_to_4k_sectors(full: Path) -> None:
    report = inspect_disk(str(full))
    plan = make_plan(report, 64 * MIB, target_sector_size=4096)
    assert plan.convert_sectors and not plan.same_layout
    assert (plan.sector_size, plan.target_sector_size) == (512, 4096)
    table = plan.target_table
    assert table.first_usable == 6 * 4096  # protective MBR, header, 4 sectors of entries
    assert table.last_usable == 64 * MIB - 5 * 4096  # 4 sectors of entries, backup header
    for part in table.partitions:
        assert part.start % 4096 == 0 and part.size % 4096 == 0
        assert part.end <= table.last_usable
    volume = report.partitions[0].volume
    assert volume is not None and volume.size <= table.partitions[0].size
    assert any("4096-byte sectors" in n and "boot loader" in n for n in plan.notes)


def test_same_sector_size_is_no_conversion(full: Path) -> None:
    plan = make_plan(inspect_disk(str(full)), 64 * MIB, target_sector_size=512)
    assert not plan.convert_sectors and plan.same_layout


# --- #14/#15: volume states ----------------------------------------------------------------


def test_dirty_logfile_ntfs_is_raw_and_named(tmp_path: Path) -> None:
    """An NTFS whose $LogFile has records to replay is copied raw (#15) and named in the notes;
    it still gets its hidden sectors when it moves (its boot sector was parsed) but no growth."""
    image = gpt_disk(tmp_path / "d.img", 256 * MIB, "1:2048:+96M", "2:0:+96M")
    parts = layout(image)
    mkext(image, parts[1][0] * SECTOR, parts[1][1] * SECTOR)
    fs = ntfsdisk.make_ntfs(tmp_path / "p2.img", parts[2][1] * SECTOR, start_sector=parts[2][0])
    _write_logfile_restart(fs, clean=False)
    put(image, fs, parts[2][0] * SECTOR)
    report = inspect_disk(str(image))
    vol = report.partitions[1].volume
    assert vol is not None and (vol.copy, vol.state) == (CopyMethod.RAW, VolumeState.DIRTY)
    plan = make_plan(report, 512 * MIB)
    p1, p2 = plan.moves
    assert p1.grow_fs and p2.moved and not p2.grown and not p2.grow_fs
    assert p2.editable
    assert not any(f.startswith("p2: grow") for f in plan.fixups)
    (note,) = plan.notes
    assert note.startswith("p2: ntfs (dirty) copied raw: $LogFile not clean")
    assert note in plan.text()


# --- a single volume ----------------------------------------------------------------------


@pytest.mark.parametrize("block", [1024, 4096])
def test_single_volume_plan(tmp_path: Path, block: int) -> None:
    image = sparse_file(tmp_path / "vol.img", 96 * MIB)
    mkext(image, 0, 96 * MIB, block=block)
    report = inspect_disk(str(image))
    plan = volume_plan(report, 128 * MIB)
    (move,) = plan.moves
    assert (move.number, move.name, move.target_start, move.target_size) == (
        0,
        "volume",
        0,
        128 * MIB,
    )
    assert (
        move.grow_fs and move.editable and plan.fixups == ("volume: grow ext4 to fill the target",)
    )
    assert "volume" in plan.text() and "p0" not in plan.text()
    with pytest.raises(TargetTooSmallError) as err:
        volume_plan(report, 96 * MIB - 4096)
    assert f"({96 * MIB} bytes)" in err.value.message
    if block == 4096:
        assert volume_plan(report, 96 * MIB, target_sector_size=4096).convert_sectors
    else:
        with pytest.raises(SafetyError, match=r"volume \(ext4\) has 1024-byte blocks"):
            volume_plan(report, 96 * MIB, target_sector_size=4096)
