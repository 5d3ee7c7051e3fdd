"""Safety audit #18: a loop device whose backing file was deleted (sysfs names it
"... (deleted)"). Before, the guard crashed with FileNotFoundError (exit 1). Now: as a target it
is refused with a message (exit 6: whatever is written there is lost); as a source it is read
like any disk; and the file is still known by its inode, so a hard link to it that survives is
recognised as the same data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clonebay.errors import SafetyError
from clonebay.system import guard
from clonebay.system.devgraph import Graph, identify
from tests.edgedisks import clonebay, sha256
from tests.safety.test_guard_stacked import Loops, loops, small_disk

__all__ = ["loops"]  # the fixture
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")


def test_a_target_over_a_deleted_file_is_refused_cleanly(loops: Loops, tmp_path: Path) -> None:
    image = small_disk(tmp_path / "src.img")
    gone = small_disk(tmp_path / "gone.img")
    target = loops.attach(gone)
    gone.unlink()
    name = Path(f"/sys/class/block/{Path(target).name}/loop/backing_file").read_text()
    assert name.strip().endswith("(deleted)")  # what sysfs shows, the case of the audit
    with pytest.raises(SafetyError, match="deleted file"):
        guard.check_target(str(image), target)
    proc = clonebay("clone", str(image), target, "--no-verify", "--grow", "none", "--yes")
    said = proc.stdout + proc.stderr
    assert proc.returncode == SafetyError.exit_code, said
    assert "Traceback" not in said and "deleted file" in said and "nothing was written" in said


def test_a_source_over_a_deleted_file_is_read(loops: Loops, tmp_path: Path) -> None:
    image = small_disk(tmp_path / "src.img")
    before = sha256(image)
    keep = tmp_path / "keep.img"
    keep.hardlink_to(image)
    source = loops.attach(image)
    image.unlink()  # sysfs says "src.img (deleted)"; keep.img is the same inode
    node = Graph.read().by_ident(identify(source))
    assert node is not None and node.backing is not None and node.backing.deleted
    assert node.backing.ident == identify(str(keep))  # LOOP_GET_STATUS64's device and inode
    with pytest.raises(SafetyError, match="is a loop device over"):
        guard.check_target(str(keep), source)
    with pytest.raises(SafetyError, match="is a loop device over"):
        guard.check_target(source, str(keep))
    copy = tmp_path / "copy.img"
    guard.check_target(source, str(copy))
    assert guard.check_source_free(source) == []
    proc = clonebay("clone", source, str(copy), "--no-verify", "--grow", "none", "--yes")
    said = proc.stdout + proc.stderr
    assert "Traceback" not in said, said
    assert proc.returncode == 0, said
    assert sha256(keep) == before
