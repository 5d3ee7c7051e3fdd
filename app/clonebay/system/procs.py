"""Other processes on this host: who holds a file open, and waiting for processes to end.

FUSE drivers (ntfs-3g, our image view) keep writing after ``umount`` returns; the only safe
moment to use their file again is when the driver process has exited. Waiting is done on pidfds
(a pidfd turns readable when its process ends), never by polling a clock.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Sequence
from pathlib import Path

from clonebay.errors import DeviceError


def holders(path: Path) -> list[int]:
    """Processes other than this one with ``path`` open (a FUSE driver serving it)."""
    target = str(path.resolve())
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:  # exited, or not ours to inspect
            continue
        if target in links:
            pids.append(int(proc.name))
    return pids


def wait_pidfds(pidfds: Sequence[int], timeout: float, what: str) -> None:
    """Block until every process behind ``pidfds`` has exited; DeviceError naming ``what``
    after ``timeout`` seconds. The pidfds stay open (the caller closes them)."""
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    waiting = set(pidfds)
    deadline = time.monotonic() + timeout
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeviceError(f"{what} did not exit within {timeout:.0f} s of its unmount")
        for fd, _ in poller.poll(int(left * 1000) + 1):
            waiting.discard(fd)
            poller.unregister(fd)
