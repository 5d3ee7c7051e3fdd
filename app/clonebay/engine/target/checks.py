"""The checks a target passes before its first write, for every writing job.

In order: the guard (system/guard.py: the target is not the source through any stacking, not
mounted, held or the live medium; a clone's source has no read-write mounts), the size the job
needs, the logical sector size (data laid out in 512-byte sectors is unreadable on a 4Kn disk,
and the reverse), and a single volume aimed at a disk that holds a partition table (``/dev/sdb``
typed for ``/dev/sdb1``): refused unless the user says ``--whole-disk``. Every refusal says
"nothing was written", and nothing was.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from clonebay.engine.target.job import TargetJob
from clonebay.errors import ClonebayError, SafetyError
from clonebay.system import guard
from clonebay.system.blockdev import device_size, sector_sizes
from clonebay.system.devgraph import Graph
from clonebay.system.parttable import read_table
from clonebay.units import human_size

SYS_CLASS_BLOCK = Path("/sys/class/block")


def target_size(path: str, default: int) -> int:
    """Bytes an existing target holds; ``default`` for a file that does not exist yet."""
    if not os.path.exists(path):
        return default
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return device_size(fd)
    finally:
        os.close(fd)


def preflight(source: str | None, target: str, allow_mounted_source: bool = False) -> list[str]:
    """The guard's refusals that need no plan; returns warnings (an allowed mounted source)."""
    warnings: list[str] = []
    if source is not None:
        guard.check_target(source, target)
        warnings += guard.check_source_free(source, allow_mounted_source)
    else:
        guard.check_target(None, target)
    return warnings


def check_job(job: TargetJob, size: int) -> None:
    """Refusals that need the job's plan and the target as it is now (or absent)."""
    guard.check_size(size, job.needed, f"the {job.what}")
    if not os.path.exists(job.target):
        return
    logical = logical_sector_size(job.target)
    if logical is not None and logical != job.sector_size:
        raise SafetyError(
            f"{job.target} has {logical}-byte logical sectors; the data was laid out for"
            f" {job.sector_size}-byte sectors (partition table, boot sectors): on this disk"
            " it would not be readable. Refusing; nothing was written"
        )
    if not job.whole_disk and not job.allow_table_overwrite:
        refuse_volume_over_table(job.target)


def logical_sector_size(path: str) -> int | None:
    """A block device's logical sector size; None for a file (it takes the data's)."""
    if not stat.S_ISBLK(os.stat(path).st_mode):
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return sector_sizes(fd)[0]
    finally:
        os.close(fd)


def is_partition(path: str) -> bool:
    """Whether ``path`` is a partition block device (sysfs has a ``partition`` file for it)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISBLK(st.st_mode):
        return False
    node = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return (Path("/sys/dev/block") / node / "partition").exists()


def partition_start_sectors(path: str) -> int | None:
    """A partition device's start in 512-byte units (sysfs), or None for anything else."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    node = Path("/sys/dev/block") / f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    try:
        return int((node / "start").read_text().strip())
    except (OSError, ValueError):
        return None


def refuse_volume_over_table(target: str) -> None:
    """A single volume must not land on a disk (or disk image file) that holds a partition
    table: its backup GPT would survive, and firmware may "repair" the primary from it."""
    if is_partition(target):
        return
    try:
        table = read_table(target)
    except ClonebayError:
        return  # nothing recognisable: not a table to protect
    if table.kind in ("gpt", "msdos") and table.partitions:
        parts = ", ".join(f"{p.number} ({human_size(p.size)})" for p in table.partitions[:6])
        raise SafetyError(
            f"{target} holds a {table.kind} partition table (partitions {parts}); a single"
            " volume would be written over the whole disk. Give a partition as the target, or"
            " --whole-disk to overwrite the whole disk; nothing was written"
        )


def check_distinct(targets: list[str]) -> None:
    """Refuse targets that are one another: the same path or file twice, the same disk through
    two names, a partition of another target, a loop device over another target, two devices
    with one serial (guard.check_not_source, asked for each pair). Nothing is written."""
    graph = Graph.read() if len(targets) > 1 else None
    for i, first in enumerate(targets):
        for second in targets[i + 1 :]:
            if os.path.realpath(first) == os.path.realpath(second):
                raise SafetyError(f"{first} is named twice as a target; nothing was written")
            if not (os.path.exists(first) and os.path.exists(second)):
                continue
            try:
                guard.check_not_source(first, second, graph)
            except SafetyError as exc:
                why = exc.message.removesuffix(f"; {guard.NOTHING}")
                why = why.replace("the source ", "").replace("the target ", "")
                raise SafetyError(
                    f"{first} and {second} cannot both be targets: they are one disk or"
                    f" overlap ({why}); nothing was written"
                ) from exc


def remove_new_file(path: str) -> None:
    """Remove a target file this job created and never wrote (a refusal came after it)."""
    with contextlib.suppress(OSError):
        os.unlink(path)
