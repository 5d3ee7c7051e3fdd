"""Disk-to-disk clones between loop devices (root): every grow mode onto same-size and 2x targets,
a target that held another OS, and every refusal — none of which writes a byte. The source's
bytes are identical after every job, failed ones included."""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.engine.clone_job import CloneOptions, clone
from clonebay.engine.inspect import inspect_disk
from clonebay.engine.layout.plan import Grow
from clonebay.errors import SafetyError, TargetTooSmallError
from clonebay.fs.probe import probe_volume
from clonebay.model import Progress
from clonebay.system.blockdev import FileSource
from clonebay.system.run import output, run
from clonebay.testdisks import disks, ext
from clonebay.testdisks.files import sparse_file
from tests.diskcheck import assert_disk_matches, extract, sha256_range

MIB = 1 << 20
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")

LoopMaker = Callable[[Path], str]


@pytest.fixture
def loop() -> Iterator[LoopMaker]:
    """Attach image files as loop devices (with partition nodes); detach only those."""
    attached: list[str] = []

    def attach(image: Path) -> str:
        dev = output(["losetup", "--find", "--show", "--partscan", str(image)]).strip()
        attached.append(dev)
        subprocess.run(["partx", "-a", dev], capture_output=True, check=False)
        return dev

    yield attach
    for dev in reversed(attached):
        subprocess.run(["umount", "-R", dev], capture_output=True, check=False)
        subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)


def rescan(dev: str) -> None:
    """Make the kernel's partition nodes of ``dev`` match its table now."""
    subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
    subprocess.run(["partx", "-a", dev], capture_output=True, check=False)


def digest(path: Path | str) -> str:
    size = (
        int(output(["blockdev", "--getsize64", str(path)]))
        if str(path).startswith("/dev/")
        else Path(path).stat().st_size
    )
    return sha256_range(Path(path), 0, size)


def layout_of(path: str) -> dict[int, tuple[int, int]]:
    table = inspect_disk(path).table
    return {p.number: (p.start, p.size) for p in table.partitions}


CASES = [
    ("gpt", 1, Grow.PROPORTIONAL),
    ("mbr", 1, Grow.PROPORTIONAL),
    ("gpt", 2, Grow.PROPORTIONAL),
    ("gpt", 2, Grow.LAST),
    ("gpt", 2, Grow.NONE),
    ("mbr", 2, Grow.PROPORTIONAL),
    ("mbr", 2, Grow.LAST),
    ("mbr", 2, Grow.NONE),
]


@pytest.mark.parametrize(("kind", "factor", "grow"), CASES)
def test_clone_between_loop_devices(
    request: pytest.FixtureRequest,
    loop: LoopMaker,
    tmp_path: Path,
    *,
    kind: str,
    factor: int,
    grow: Grow,
) -> None:
    built: disks.BuiltDisk = request.getfixturevalue(f"{kind}_disk")
    source = loop(built.path)
    before = digest(source)
    target_file = sparse_file(tmp_path / "target.img", built.size * factor)
    target = loop(target_file)
    events: list[Progress] = []
    result = clone(source, target, CloneOptions(grow=grow), progress=events.append)
    assert digest(source) == before, "the source was written"
    verify = [e for e in events if e.region == "verify"]  # the read-back reports its progress
    assert verify and verify[-1].done == verify[-1].total > 0
    assert events[-1] is verify[-1], "verify is the last phase"
    assert output(["blockdev", "--getro", source]).strip() == "0", "BLKROSET not restored"
    assert result.verified_chunks > 0
    src_layout, dst_layout = layout_of(source), layout_of(target)
    assert_disk_matches(target_file, built, tmp_path, dst_layout)
    src_table, dst_table = inspect_disk(source).table, inspect_disk(target).table
    assert dst_table.disk_id == src_table.disk_id
    for a, b in zip(src_table.partitions, dst_table.partitions, strict=True):
        assert (a.number, a.type_id, a.guid, a.name, a.attributes, a.kind) == (
            b.number, b.type_id, b.guid, b.name, b.attributes, b.kind
        )  # fmt: skip
    if kind == "gpt":
        assert "No problems found" in output(["sgdisk", "-v", target])
    data = {p.number for p in src_table.data_partitions()}
    grown = [n for n in data if dst_layout[n][1] > src_layout[n][1]]
    if factor == 1 or grow is Grow.NONE:
        assert dst_layout == src_layout
        assert not grown
    else:
        assert grown, "nothing grew on a 2x target"
        if grow is Grow.LAST:
            assert len(grown) == 1
    for part in built.partitions:
        start, size = dst_layout[part.number]
        if part.fstype in ("ntfs", "fat16", "fat32", "fat12"):  # hidden sectors follow the move
            with open(target_file, "rb") as f:
                f.seek(start + 0x1C)
                assert struct.unpack("<I", f.read(4))[0] == start // 512
        if part.number in grown:  # the filesystem fills its new partition
            with FileSource(str(target_file), start, size) as src:
                volume = probe_volume(src)
            assert size - volume.size < 2 * MIB, (part.number, volume.size, size)


def test_target_that_held_another_os_keeps_no_trace(
    mbr_disk: disks.BuiltDisk, loop: LoopMaker, tmp_path: Path
) -> None:
    target_file = sparse_file(tmp_path / "old.img", mbr_disk.size * 2)
    old = loop(target_file)  # an old GPT disk with an ext4 and an md member at its end
    run(["sgdisk", "-n1:1M:+100M", "-n2:0:0", old])
    rescan(old)
    run(["mkfs.ext4", "-q", "-F", f"{old}p1"])
    md_at = (mbr_disk.size * 2 - 8192) & ~4095
    with open(target_file, "r+b") as f:  # md 1.0 superblock magic near the end of the disk
        f.seek(md_at)
        f.write(struct.pack("<I", 0xA92B4EFC))
    subprocess.run(["partx", "-d", old], capture_output=True, check=False)
    source = loop(mbr_disk.path)
    clone(source, old, CloneOptions())
    rescan(old)

    def signatures(dev: str) -> list[str]:
        argv = ["wipefs", "--no-act", "--noheadings", "-O", "TYPE,OFFSET", dev]
        return sorted(output(argv).splitlines())

    rescan(source)
    assert signatures(old) == signatures(source)  # only the table we wrote
    for part in mbr_disk.partitions:
        found = signatures(f"{old}p{part.number}")
        assert found == signatures(f"{source}p{part.number}"), (part.number, found)
        assert found, f"partition {part.number} shows no filesystem"
    with open(target_file, "rb") as f:
        f.seek(md_at)
        assert f.read(4) != struct.pack("<I", 0xA92B4EFC)


def test_refusals_write_nothing(
    gpt_disk: disks.BuiltDisk, loop: LoopMaker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = loop(gpt_disk.path)
    src_before = digest(source)
    alias = tmp_path / "alias"
    alias.symlink_to(source)
    second = loop(gpt_disk.path)  # another loop device over the same file
    small_file = sparse_file(tmp_path / "small.img", gpt_disk.size // 2)
    small = loop(small_file)
    busy_file = sparse_file(tmp_path / "busy.img", gpt_disk.size * 2)
    busy = loop(busy_file)
    run(["sgdisk", "-n1:1M:+64M", busy])
    rescan(busy)
    # no lazy init: the kernel would fill the inode tables in the background once mounted
    run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", f"{busy}p1"])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run(["mount", f"{busy}p1", str(mnt)])
    try:
        cases = [
            (source, SafetyError, "is the source"),
            (str(alias), SafetyError, "is the source"),
            (f"{source}p2", SafetyError, "same disk"),
            (second, SafetyError, "same file"),
            (small, TargetTooSmallError, "target holds"),
            (busy, SafetyError, "mounted"),
        ]
        targets = {t: digest(t) for t, _, _ in cases if t != source and "alias" not in t}
        for target, error, words in cases:
            with pytest.raises(error, match=words):
                clone(source, target)
            assert cli.main(["clone", "--yes", source, target]) == error.exit_code
            assert "nothing was written" in capsys.readouterr().err
        for target, before in targets.items():
            assert digest(target) == before, f"{target} was written"
    finally:
        run(["umount", str(mnt)])
    assert digest(source) == src_before


def test_single_volume_clone_grows_filesystem(
    mbr_disk: disks.BuiltDisk, loop: LoopMaker, tmp_path: Path
) -> None:
    part = next(p for p in mbr_disk.partitions if p.fstype == "ext3")
    source = loop(mbr_disk.path)
    target_file = sparse_file(tmp_path / "vol.img", part.size * 2)
    target = loop(target_file)
    assert cli.main(["clone", "--yes", f"{source}p{part.number}", target]) == 0
    with FileSource(target) as src:
        volume = probe_volume(src)
    assert volume.fstype == "ext3" and volume.size == part.size * 2
    copy = extract(target_file, 0, part.size * 2, tmp_path / "copy.img")
    ext.fsck(copy)
    assert part.tree is not None
    assert ext.file_hashes(copy) == part.tree.files
