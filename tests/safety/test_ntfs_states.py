"""Safety audit #14 and #15: Windows volumes in states a copy must respect.

- An NTFS whose $LogFile still has records to replay (#15) is copied raw: a committed allocation
  may exist only in the log, and after the replay on the target it would point at clusters a
  native copy never carried. Its boot sector was parsed, so a move still sets its hidden sectors.
- A hibernated (or Fast Startup) NTFS (#14) is copied raw and never edited: no hidden-sector
  patch, no growth; only the machine that saved it should resume it.

Both are named, with the reason, in the Plan's notes and in the clone's result. The volumes are
made by mkntfs; hiberfil.sys is written through ntfs-3g, the restart page into the real $LogFile
(ntfs-3g agrees that the volume is unclean)."""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import pytest

from clonebay.engine.inspect import inspect_disk
from clonebay.engine.layout.plan import make_plan
from clonebay.engine.layout.states import HIBERNATED_WORDS
from clonebay.model import CopyMethod, VolumeState
from clonebay.system.run import run
from clonebay.testdisks import ntfs as ntfsdisk
from clonebay.testdisks.files import sparse_file
from tests.edgedisks import MIB, clonebay, gpt_disk, layout, mkext, put
from tests.fs.test_ntfs import _write_logfile_restart

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ntfs-3g (FUSE) needs root")
HIDDEN_SECTORS = 0x1C  # NTFS BPB: 32-bit start of the volume in sectors
HIBERNATED_NOTE = "p3: " + HIBERNATED_WORDS


def _hidden(image: Path, start: int) -> int:
    with open(image, "rb") as f:
        value: int = struct.unpack("<I", os.pread(f.fileno(), 4, start + HIDDEN_SECTORS))[0]
    return value


@pytest.fixture(scope="module")
def windows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """512 MiB GPT: p1 ext4 (grows, so the others move), p2 NTFS with an unclean $LogFile,
    p3 NTFS with a hiberfil.sys that starts with "HIBR"."""
    work = tmp_path_factory.mktemp("states")
    image = gpt_disk(work / "win.img", 512 * MIB, "1:2048:+128M", "2:0:+96M", "3:0:+96M")
    parts = layout(image)
    mkext(image, parts[1][0] * 512, parts[1][1] * 512)
    dirty = ntfsdisk.make_ntfs(work / "p2.img", parts[2][1] * 512, start_sector=parts[2][0])
    _write_logfile_restart(dirty, clean=False)
    mnt = Path(tempfile.mkdtemp(prefix="clonebay-states-"))
    # ntfs-3g reads the restart area the same way; "norecover": it falls back to read-only
    # rather than clearing the log
    proc = run(["ntfs-3g", "-o", "norecover", str(dirty), str(mnt)], check=False)
    if proc.returncode == 0:
        run(["umount", str(mnt)])
    mnt.rmdir()
    assert b"unclean file system" in proc.stderr and b"Could not mount read-write" in proc.stderr
    hib = ntfsdisk.make_ntfs(work / "p3.img", parts[3][1] * 512, start_sector=parts[3][0])
    ntfsdisk.add_hiberfil(hib, b"HIBR")
    put(image, dirty, parts[2][0] * 512)
    put(image, hib, parts[3][0] * 512)
    return image


def test_plan_copies_both_raw_and_names_them(windows: Path) -> None:
    report = inspect_disk(str(windows))
    p2, p3 = (pr.volume for pr in report.partitions[1:])
    assert p2 is not None and (p2.copy, p2.state) == (CopyMethod.RAW, VolumeState.DIRTY)
    assert p3 is not None and (p3.copy, p3.state) == (CopyMethod.RAW, VolumeState.HIBERNATED)
    plan = make_plan(report, 1 << 30)
    m1, m2, m3 = plan.moves
    assert m1.grow_fs and m2.moved and m3.moved
    assert m2.editable and not m3.editable
    assert not m2.grow_fs and not m3.grow_fs and not m3.grown
    assert not any(f.startswith("p3:") for f in plan.fixups)
    assert "p2: patch hidden sectors in the ntfs boot sectors" in plan.fixups
    assert HIBERNATED_NOTE in plan.notes
    assert any(n.startswith("p2: ntfs (dirty) copied raw: $LogFile not clean") for n in plan.notes)
    assert HIBERNATED_NOTE in plan.text()


def test_clone_keeps_the_hibernated_volume_unedited(windows: Path, tmp_path: Path) -> None:
    target = sparse_file(tmp_path / "big.img", 1 << 30)
    before = {n: _hidden(windows, s * 512) for n, (s, _) in layout(windows).items() if n > 1}
    proc = clonebay("clone", str(windows), str(target), "--yes")
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    after = layout(target)
    assert after[3][0] * 512 != layout(windows)[3][0] * 512  # p3 moved ...
    assert _hidden(target, after[3][0] * 512) == before[3]  # ... and was not edited
    assert _hidden(target, after[2][0] * 512) == after[2][0]  # p2 (dirty, raw) was patched
    assert HIBERNATED_NOTE in said
    assert "p2: ntfs (dirty) copied raw" in said
