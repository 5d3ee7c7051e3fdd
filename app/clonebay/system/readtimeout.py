"""A bound on how long one read of a failing disk may hang: the device's own command timeout.

A read of a dying sector does not always fail: the drive may retry internally for a long time,
and the kernel waits for each command up to the device's timeout (SCSI, SATA and USB disks:
``/sys/block/NAME/device/timeout``, 30 s by default), then its error handler resets and retries,
so one bad sector can hold a read for minutes. A thread blocked in the kernel cannot be
interrupted from user space, so the bound has to be the kernel's own: during a rescue that
timeout is lowered to RESCUE_TIMEOUT seconds, and put back as it was when the rescue ends
(a killed job leaves the lower value, which only makes the next read of a bad sector fail
sooner). NVMe has one timeout for every controller (a module parameter), and virtio none: there
the disk's own behaviour applies, as it does for a file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

RESCUE_TIMEOUT = 10  # seconds per command while rescuing (the kernel's default is 30)


def timeout_file(device: str, sysfs: Path = Path("/sys")) -> Path | None:
    """The command-timeout file of the disk that holds ``device`` (a disk or a partition
    node), or None when it has none (NVMe, virtio, loop, a file)."""
    try:
        rdev = os.stat(device).st_rdev
    except OSError:
        return None
    if not rdev:
        return None
    block = sysfs / "dev" / "block" / f"{os.major(rdev)}:{os.minor(rdev)}"
    try:
        disk = block.resolve(strict=True)
    except OSError:
        return None
    if (disk / "partition").exists():
        disk = disk.parent
    found = disk / "device" / "timeout"
    return found if found.is_file() else None


@contextlib.contextmanager
def bounded_reads(device: str, seconds: int = RESCUE_TIMEOUT) -> Iterator[int | None]:
    """While the block runs, the disk of ``device`` gives up a command after ``seconds``
    (when its timeout is longer and can be set); yields the timeout in force, or None."""
    path = timeout_file(device)
    if path is None:
        yield None
        return
    try:
        before = int(path.read_text().strip())
    except (OSError, ValueError):
        yield None
        return
    if before <= seconds:
        yield before
        return
    try:
        path.write_text(f"{seconds}\n")
    except OSError as exc:
        log.info("could not lower %s to %d s: %s", path, seconds, exc)
        yield before
        return
    try:
        yield seconds
    finally:
        with contextlib.suppress(OSError):
            path.write_text(f"{before}\n")
