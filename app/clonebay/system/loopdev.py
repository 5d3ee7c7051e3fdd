"""Loop devices: a disk image file seen as a block device, for the demo and the fixups.

``attach`` runs ``losetup --find --show`` (with ``--partscan`` for a whole disk) and, since
``--partscan`` does not always make partition nodes on this kind of machine, ``partx --add``
after it. ``detach`` undoes both, partitions first: partitions added by partx outlive
``losetup --detach`` otherwise.

``attached`` is for a process that hands the devices to somebody else (the demo's TUI) and may
die without running its cleanup (a closed terminal): it keeps each device open and asks for
``losetup --detach`` at once, which on a device in use only sets the kernel's autoclear flag, so
the device goes away when the last file descriptor closes — at the latest when the process ends.
Only devices attached here are ever detached.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

from clonebay.system.run import run


def attach(
    path: str, *, offset: int = 0, size: int = 0, partitions: bool = False, read_only: bool = False
) -> str:
    """A new loop device over ``path`` (``size`` bytes from ``offset``; 0: to the end)."""
    argv = ["losetup", "--find", "--show"]
    if offset:
        argv += ["--offset", str(offset)]
    if size:
        argv += ["--sizelimit", str(size)]
    if partitions:
        argv.append("--partscan")
    if read_only:
        argv.append("--read-only")
    dev = run([*argv, path]).stdout.decode().strip()
    if partitions:
        run(["partx", "--add", dev], check=False)  # "already exists" when --partscan worked
    return dev


def detach(dev: str, *, partitions: bool = False) -> None:
    """Detach ``dev`` (its partition nodes first). Best effort: already gone is fine."""
    if partitions:
        run(["partx", "--delete", dev], check=False)
    run(["losetup", "--detach", dev], check=False)


@contextlib.contextmanager
def attached(paths: Sequence[str]) -> Iterator[list[str]]:
    """Partitioned loop devices over ``paths``, gone when the block ends or the process dies."""
    devices: list[str] = []
    held: list[int] = []
    try:
        for path in paths:
            dev = attach(path, partitions=True)
            devices.append(dev)
            held.append(os.open(dev, os.O_RDONLY | os.O_CLOEXEC))
            run(["losetup", "--detach", dev], check=False)  # in use: sets autoclear only
        yield devices
    finally:
        for dev in devices:
            run(["partx", "--delete", dev], check=False)
        for fd in held:
            os.close(fd)  # the last close of an autoclear device detaches it
