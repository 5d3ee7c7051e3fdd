"""The kernel's read-only flag (BLKROSET) on a source, shared by every clonebay job using it.

A source is set read-only for as long as a job reads it: the device itself, its whole disk and
every partition of that disk, down every stack (system/devgraph.py: ``read_only_set``), so that
nothing writes it by mistake, through another partition node or the disk's node included.

Two jobs may read one disk at the same time (a save of sda1 while a clone of sda runs, in two
processes). The flag is the kernel's, one per device, so the first job to end must not clear it
under the other. Each device gets a lock file ``/run/clonebay/ro/MAJOR:MINOR`` that records the
flag as it was before the first job set it ("0 sda\\n"); every job holding the device keeps a
shared flock(2) on it. At the end a job tries to upgrade to an exclusive lock without waiting:
only the last one succeeds; it puts the recorded flag back and removes the file. Every step runs
under one exclusive lock on ``/run/clonebay/ro/.lock``: flock's upgrade and downgrade are not
atomic (the old lock is dropped first), and the mutex keeps another job from slipping in between.

A lock file nobody holds is what a job that died left behind: its record is the original flag
(the current one is the dead job's), so the next job takes it over. /run is a tmpfs: nothing
survives a reboot. Without root (no /run/clonebay, BLKROSET not permitted) nothing is set, and the
source is still opened read-only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

from clonebay.system.devgraph import Graph, Node, covered, identify, read_mounts, read_only_set

RO_DIR = Path("/run/clonebay/ro")
BLKROSET = 0x125D
BLKROGET = 0x125E


def get_ro(fd: int) -> bool:
    return bool(struct.unpack("i", fcntl.ioctl(fd, BLKROGET, b"\0" * 4))[0])


def set_ro(fd: int, value: bool) -> None:
    fcntl.ioctl(fd, BLKROSET, struct.pack("i", int(value)))


@contextlib.contextmanager
def _device(node: Node) -> Iterator[int]:
    """The device node opened read-only (checked to be that device), for an ioctl."""
    fd = os.open(node.node, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISBLK(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (
            node.devnum
        ):
            raise OSError(f"{node.node} is not {node.name}")
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _mutex(lock_dir: Path) -> Iterator[None]:
    fd = os.open(lock_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


class ReadOnlyHold:
    """BLKROSET on ``nodes`` until ``release``, shared with other jobs (module docstring)."""

    def __init__(self, nodes: list[Node], lock_dir: Path = RO_DIR) -> None:
        self.lock_dir = lock_dir
        self._held: list[tuple[Node, int]] = []  # (device, its lock file locked shared)
        if not nodes:
            return
        try:
            lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            return  # not root: /run/clonebay cannot be made, and BLKROSET would be refused
        with _mutex(lock_dir):
            for node in nodes:
                fd = self._take(node)
                if fd is not None:
                    self._held.append((node, fd))

    @property
    def devices(self) -> list[str]:
        return [node.node for node, _ in self._held]

    def _path(self, node: Node) -> Path:
        return self.lock_dir / f"{node.devnum[0]}:{node.devnum[1]}"

    def _take(self, node: Node) -> int | None:
        """Under the mutex: set ``node`` read-only (recording its flag when first), lock shared."""
        try:
            fd = os.open(self._path(node), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        try:
            with _device(node) as dev:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    first = True
                except BlockingIOError:
                    first = False
                if first and not os.pread(fd, 64, 0):  # no record left by a job that died
                    os.pwrite(fd, f"{int(get_ro(dev))} {node.name}\n".encode(), 0)
                    os.fsync(fd)
                if not get_ro(dev):
                    set_ro(dev, True)
            fcntl.flock(fd, fcntl.LOCK_SH)  # immediate: only the mutex holder ever locks EX
        except OSError:
            os.close(fd)  # not permitted, or the device is gone: it stays as it is
            return None
        return fd

    def release(self) -> None:
        """Drop this job's hold; the last job puts every recorded flag back."""
        if not self._held:
            return
        with _mutex(self.lock_dir):
            for node, fd in self._held:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)  # another job still reads this device
                    continue
                try:
                    was_ro = os.pread(fd, 64, 0).split(b" ")[0] != b"0"
                    if not was_ro:
                        with contextlib.suppress(OSError), _device(node) as dev:
                            set_ro(dev, False)
                    with contextlib.suppress(FileNotFoundError):
                        self._path(node).unlink()
                finally:
                    os.close(fd)
        self._held = []


def hold_source(path: str, lock_dir: Path = RO_DIR) -> ReadOnlyHold:
    """Set the block device ``path`` read-only with its disk, the disk's partitions and every
    device under it, for as long as the hold lasts.

    A partition the source does not cover that is mounted read-write (an installed system's
    root beside the partition being saved) is left alone, and so is its disk (the disk's flag
    is its partitions' too): the running system writes there on purpose, and the kernel would
    refuse a later read-write remount of it."""
    graph = Graph.read()
    ident = identify(path)
    reads = covered(graph, ident)
    written = {m.devnum for m in read_mounts() if m.writable}

    def in_use(node: Node) -> bool:
        family = [node, *graph.partitions(node.name)]
        return node.ident not in reads and any(n.devnum in written for n in family)

    return ReadOnlyHold([n for n in read_only_set(graph, ident) if not in_use(n)], lock_dir)
