"""What a disk shrunk onto a smaller target must be: the factory's record checked at the new
places (every filesystem clean by its own fsck, every file as recorded, raw partitions
byte-identical, boot code kept), the identities kept, something shrunk, the table valid."""

from __future__ import annotations

from pathlib import Path

from clonebay.engine.inspect import DiskReport, inspect_disk
from clonebay.system.run import run
from clonebay.testdisks import disks
from tests.diskcheck import assert_disk_matches


def identities(report: DiskReport) -> dict[str, str]:
    """Disk GUID or MBR signature, partition GUIDs, filesystem UUIDs."""
    out = {"disk": report.table.disk_id}
    for pr in report.partitions:
        out[f"p{pr.partition.number} guid"] = pr.partition.guid
        if pr.volume is not None:
            out[f"p{pr.partition.number} uuid"] = pr.volume.uuid
    return out


def assert_shrunk_disk(target: Path, built: disks.BuiltDisk, work: Path) -> DiskReport:
    source = inspect_disk(str(built.path))
    after = inspect_disk(str(target))
    layout = {p.number: (p.start, p.size) for p in after.table.partitions}
    assert_disk_matches(target, built, work, layout)
    assert identities(after) == identities(source)
    old = {pr.partition.number: pr.partition for pr in source.partitions}
    shrunk = [
        pr
        for pr in after.partitions
        if pr.partition.kind != "extended" and pr.partition.size < old[pr.partition.number].size
    ]
    assert shrunk, "nothing shrank"
    for pr in shrunk:
        assert pr.volume is not None and pr.volume.fstype in ("ntfs", "ext3", "ext4")
        assert pr.volume.size <= pr.partition.size, pr
        assert pr.partition.size - pr.volume.size < 2 << 20, "the filesystem fills its partition"
        assert pr.partition.start % (1 << 20) == 0, "alignment kept"
    assert after.table.disk_size == target.stat().st_size
    if after.table.kind == "gpt":
        assert "No problems found" in run(["sgdisk", "-v", str(target)]).stdout.decode()
    else:
        run(["sfdisk", "--verify", str(target)])
    return after
