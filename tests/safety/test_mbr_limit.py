"""Safety audit #8: an MBR disk cloned onto a 3 TiB target. An MBR entry holds 32-bit sector
counts, so the Plan grows the partition at most to 2^32 - 1 sectors and says the rest of the
disk stays unused; sfdisk must be able to write every table the Plan makes (the old plan grew
to 3 TiB, wrote the data, then sfdisk failed and the target kept the old table)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clonebay.engine.inspect import inspect_disk
from clonebay.engine.layout import limits
from clonebay.engine.layout.plan import Grow, make_plan
from clonebay.engine.layout.table_write import write_table
from clonebay.testdisks.files import sparse_file
from tests.edgedisks import MIB, clonebay, layout, mbr_disk, mkext

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the clone guard needs root")
TIB = 1 << 40
SECTOR = 512


@pytest.fixture
def mbr(tmp_path: Path) -> Path:
    image = mbr_disk(tmp_path / "mbr.img", 256 * MIB, "start=2048, size=200MiB, type=83\n")
    mkext(image, MIB, 200 * MIB)
    return image


@pytest.mark.parametrize("grow", list(Grow))
def test_every_plan_onto_3_tib_is_one_sfdisk_writes(mbr: Path, tmp_path: Path, grow: Grow) -> None:
    plan = make_plan(inspect_disk(str(mbr)), 3 * TIB, grow)
    for part in plan.target_table.partitions:
        assert part.end <= limits.MBR_MAX_SECTORS * SECTOR
    target = sparse_file(tmp_path / "big3t.img", 3 * TIB)
    write_table(str(target), plan.target_table)  # raises if sfdisk cannot write it
    written = layout(target)
    assert written == {
        p.number: (p.start // SECTOR, p.size // SECTOR) for p in plan.target_table.partitions
    }
    if grow is not Grow.NONE:
        assert written[1][0] + written[1][1] > (2 * TIB - 64 * MIB) // SECTOR  # grown to the cap
        assert any("stay unused" in n for n in plan.notes)


def test_clone_onto_3_tib(mbr: Path, tmp_path: Path) -> None:
    target = sparse_file(tmp_path / "big3t.img", 3 * TIB)
    proc = clonebay("clone", str(mbr), str(target), "--yes")
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    start, size = layout(target)[1]
    assert start == 2048 and start + size <= limits.MBR_MAX_SECTORS
    assert start + size > (2 * TIB - 64 * MIB) // SECTOR
    assert "stay unused" in said  # the Plan's note reaches the result
