"""Safety audit #1 and #20: SourceDevice sets the kernel's read-only flag on the source's whole
disk and every partition of it, not only on the node it opens, and two jobs reading one disk
(two real processes) do not undo each other: when the first one closes, the disk and its
partitions stay read-only (BLKROGET) until the second one closes; then the flags are as before,
including a partition that was read-only before either started. A job that dies without
closing leaves its record behind, and the next job puts the original flags back."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.safety.test_guard_stacked import Loops, loops, small_disk

__all__ = ["loops"]  # the fixture
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="BLKROSET and loop devices need root")
BLKROGET, BLKROSET = 0x125E, 0x125D
JOB = """\
import sys
from clonebay.system.blockdev import SourceDevice
source = SourceDevice(sys.argv[1])
print("open", flush=True)
sys.stdin.readline()
source.close()
print("closed", flush=True)
"""


def read_only(dev: str) -> bool:
    fd = os.open(dev, os.O_RDONLY)
    try:
        return bool(struct.unpack("i", fcntl.ioctl(fd, BLKROGET, b"\0" * 4))[0])
    finally:
        os.close(fd)


def set_read_only(dev: str, value: bool) -> None:
    fd = os.open(dev, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, BLKROSET, struct.pack("i", int(value)))
    finally:
        os.close(fd)


class Job:
    """A process holding SourceDevice(path) open until told to close it."""

    def __init__(self, path: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", JOB, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "open\n"

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "closed\n"
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


def flags(devices: list[str]) -> list[bool]:
    return [read_only(d) for d in devices]


def test_two_jobs_on_one_disk_do_not_undo_each_other(loops: Loops, tmp_path: Path) -> None:
    disk = loops.attach(small_disk(tmp_path / "src.img"), partitions=True)
    devices = [disk, f"{disk}p1", f"{disk}p2"]
    set_read_only(f"{disk}p2", True)  # read-only before any job: it must stay so
    assert flags(devices) == [False, False, True]
    first = Job(f"{disk}p1")  # a partition: the disk and the other partition too
    assert flags(devices) == [True, True, True]
    second = Job(disk)
    first.close()
    assert flags(devices) == [True, True, True], "the first job's end lifted the second's flags"
    second.close()
    assert flags(devices) == [False, False, True]
    set_read_only(f"{disk}p2", False)


def test_a_job_that_died_is_taken_over(loops: Loops, tmp_path: Path) -> None:
    disk = loops.attach(small_disk(tmp_path / "src.img"), partitions=True)
    devices = [disk, f"{disk}p1", f"{disk}p2"]
    dead = Job(disk)
    dead.kill()
    assert flags(devices) == [True, True, True]  # nobody put them back
    later = Job(f"{disk}p2")
    later.close()
    assert flags(devices) == [False, False, False]


def test_writes_are_refused_while_a_job_reads(loops: Loops, tmp_path: Path) -> None:
    disk = loops.attach(small_disk(tmp_path / "src.img"), partitions=True)
    job = Job(f"{disk}p2")
    try:
        for dev in (disk, f"{disk}p1"):
            fd = os.open(dev, os.O_WRONLY)
            try:
                with pytest.raises(PermissionError):
                    os.pwrite(fd, b"x", 0)
            finally:
                os.close(fd)
    finally:
        job.close()


def test_a_mounted_partition_beside_the_source_is_left_writable(
    loops: Loops, tmp_path: Path
) -> None:
    """A running system's root beside the partition being copied: the kernel would refuse its
    read-write remount, so neither it nor the disk (whose flag is its partitions') is set."""
    image = tmp_path / "src.img"
    small_disk(image)
    disk = loops.attach(image, partitions=True)
    mkfs = ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"]
    subprocess.run([*mkfs, f"{disk}p2"], check=True, capture_output=True)
    loops.mount(f"{disk}p2", tmp_path / "mnt")
    job = Job(f"{disk}p1")
    try:
        assert flags([disk, f"{disk}p1", f"{disk}p2"]) == [False, True, False]
        (tmp_path / "mnt" / "still-writable").write_text("yes")
    finally:
        job.close()
    assert flags([disk, f"{disk}p1", f"{disk}p2"]) == [False, False, False]
