"""Safety audit #1: the guard sees stacked devices. (a) A second loop device over the source's
loop disk is the target of a clone of the source's partition: before, the source's GPT was
overwritten. (b) A disk whose partition is mounted read-write through a loop device is the
target: before, it was written while mounted. Both are refused (exit 6) by the guard itself and
by `clonebay clone`, and the source's bytes (and the target's) stay as they were. dm and md
stacks, which this kernel lacks, are in tests/system/test_devgraph.py (fake sysfs) and
tests/iso/test_live_stacks.py (the live system)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from clonebay.errors import SafetyError
from clonebay.system import guard
from clonebay.system.run import output, run
from tests.edgedisks import MIB, clonebay, gpt_disk, mkext, sha256

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root")


class Loops:
    """Loop devices attached here (partition nodes made with partx), detached in reverse."""

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack

    def attach(self, backing: Path | str, partitions: bool = False) -> str:
        argv = ["losetup", "--find", "--show", *(["--partscan"] if partitions else [])]
        dev = output([*argv, str(backing)]).strip()
        self.stack.callback(subprocess.run, ["losetup", "-d", dev], capture_output=True)
        if partitions:
            self.stack.callback(subprocess.run, ["partx", "-d", dev], capture_output=True)
            subprocess.run(["partx", "-a", dev], capture_output=True, check=False)
        return dev

    def mount(self, dev: str, where: Path, *options: str) -> None:
        where.mkdir(exist_ok=True)
        run(["mount", *options, dev, str(where)])
        self.stack.callback(subprocess.run, ["umount", str(where)], capture_output=True)


@pytest.fixture
def loops() -> Iterator[Loops]:
    with ExitStack() as stack:
        yield Loops(stack)


def small_disk(path: Path) -> Path:
    """64 MiB GPT: p1 ext4 (24 MiB at 1 MiB), p2 24 MiB."""
    gpt_disk(path, 64 * MIB, "1:2048:+24M", "2:0:+24M")
    mkext(path, MIB, 24 * MIB)
    return path


def refused(source: str, target: str) -> None:
    """The guard refuses, and so does the CLI: exit 6, a message, no traceback."""
    with pytest.raises(SafetyError, match="nothing was written"):
        guard.check_target(source, target)
    proc = clonebay("clone", source, target, "--no-verify", "--grow", "none", "--yes")
    said = proc.stdout + proc.stderr
    assert proc.returncode == SafetyError.exit_code, said
    assert "nothing was written" in said and "Traceback" not in said, said


def test_a_to_a_second_loop_over_the_source_disk(loops: Loops, tmp_path: Path) -> None:
    image = small_disk(tmp_path / "src.img")
    before = sha256(image)
    source = loops.attach(image, partitions=True)
    view = loops.attach(source)  # a second view of the source disk
    with pytest.raises(SafetyError, match="overlap in the device graph"):
        guard.check_target(f"{source}p1", view)
    refused(f"{source}p1", view)
    # the other way round: the view is the source, a partition of the disk below the target
    refused(view, f"{source}p2")
    # and a partition of a loop device over the source's image file
    other = loops.attach(image, partitions=True)
    refused(str(image), f"{other}p2")
    refused(f"{other}p1", f"{source}p2")
    assert sha256(image) == before, "the source was written"


def test_b_to_a_disk_mounted_through_a_loop_over_its_partition(
    loops: Loops, tmp_path: Path
) -> None:
    image = small_disk(tmp_path / "src.img")
    target_image = small_disk(tmp_path / "tgt.img")
    disk = loops.attach(target_image, partitions=True)
    part_view = loops.attach(f"{disk}p1")
    loops.mount(part_view, tmp_path / "mnt")
    src_before, dst_before = sha256(image), sha256(target_image)
    for target in (disk, f"{disk}p2"):
        with pytest.raises(SafetyError, match=f"mounted .*{tmp_path}/mnt.* through {part_view}"):
            guard.check_target(str(image), target)
        refused(str(image), target)
    with pytest.raises(SafetyError, match="mounted"):
        guard.check_target(None, disk)  # restore and receive: no source
    assert sha256(image) == src_before
    assert sha256(target_image) == dst_before, "the mounted target was written"


def test_an_image_file_with_a_mounted_loop_over_it(loops: Loops, tmp_path: Path) -> None:
    image = small_disk(tmp_path / "src.img")
    target_image = small_disk(tmp_path / "tgt.img")
    disk = loops.attach(target_image, partitions=True)
    loops.mount(f"{disk}p1", tmp_path / "mnt")
    before = sha256(target_image)
    with pytest.raises(SafetyError, match="mounted"):
        guard.check_target(str(image), str(target_image))
    refused(str(image), str(target_image))
    assert sha256(target_image) == before


def test_the_old_rules_still_hold(loops: Loops, tmp_path: Path) -> None:
    image = small_disk(tmp_path / "src.img")
    source = loops.attach(image, partitions=True)
    alias = tmp_path / "alias"
    alias.symlink_to(source)
    hard = tmp_path / "hard.img"
    hard.hardlink_to(image)
    second = loops.attach(image)
    for target, words in (
        (str(alias), "is the source"),
        (f"{source}p2", "same disk"),
        (second, "same file"),
    ):
        with pytest.raises(SafetyError, match=words):
            guard.check_target(source, target)
    with pytest.raises(SafetyError, match="is the source"):
        guard.check_target(str(image), str(hard))
    with pytest.raises(SafetyError, match="is a loop device over"):
        guard.check_target(str(hard), source)
    # an unrelated file and a new file pass
    guard.check_target(source, str(small_disk(tmp_path / "other.img")))
    guard.check_target(source, str(tmp_path / "new.img"))
