"""Laying a source out on a target smaller than its partitions: which shrink, and to what.

A partition can shrink when it holds a clean ext2/3/4 or NTFS volume that is copied natively,
or a swap area (made anew, smaller, with its UUID and label; never one that holds a hibernated
system), is not a system partition (ESP, MSR, BIOS boot, recovery) and is at least 64 MiB.
Each gets at least its *floor*: the minimum its filesystem's own tool computes (``resize2fs -P``,
``ntfsresize --info``; engine/shrink/resize.py) plus headroom (a tenth, at least 32 MiB),
never more than it had. Every other partition keeps its size, and every partition keeps the gap
before it (an EBR sits in the gap before a logical partition) and its 1 MiB alignment. What the
target has beyond the floors is shared out like growth: in proportion to the source sizes
(``proportional``) or to the last shrinkable partition first (``last``), never past a
partition's source size.

When the floors do not fit, the refusal names the numbers: each partition's need and why it
cannot give more, and by how much the target is short.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from clonebay.engine.layout import limits
from clonebay.engine.layout.states import region_name
from clonebay.errors import TargetTooSmallError
from clonebay.model import CopyMethod, Partition, Volume, VolumeState
from clonebay.units import human_size

MIB = 1 << 20
SMALL = 64 << 20
HEADROOM_MIN = 32 << 20
SHRINKABLE_FS = {"ext2", "ext3", "ext4", "ntfs", "swap"}  # swap: made anew, smaller


def why_fixed(part: Partition, volume: Volume | None, fixed_types: set[str]) -> str:
    """Why this partition cannot shrink ("" when it can)."""
    if volume is None:
        return "no filesystem"
    fs = volume.fstype
    if part.type_id.upper() in fixed_types or part.type_id.lower() in fixed_types:
        return "a system partition (kept as it is)"
    if "esp" in part.flags or "bios_grub" in part.flags:
        return "a system partition (kept as it is)"
    if volume.state is VolumeState.HIBERNATED and fs == "swap":
        return (
            "swap holds a hibernated Linux system: resume it and shut it down, or clear the"
            " swap area there (swapoff; mkswap), then clone again"
        )
    if volume.state is VolumeState.HIBERNATED:
        return (
            "NTFS is hibernated or saved by Fast Startup: shut Windows down fully (Shift+Shut"
            " down, or `powercfg /h off`), then boot clonebay again"
        )
    if volume.state is VolumeState.ENCRYPTED:
        return f"encrypted ({volume.reason or fs}): copied whole, never resized"
    if volume.decrypted:
        return "decrypted while it is copied (--decrypt): never resized in the same job"
    if volume.state in (VolumeState.DIRTY, VolumeState.NEEDS_RECOVERY, VolumeState.ERRORS):
        fix = (
            "start Windows and shut it down cleanly (or run chkdsk)"
            if fs == "ntfs"
            else "mount it once in its own system, or run fsck on it"
        )
        return f"{fs} is {volume.state.value}: {fix}, then clone again"
    if volume.copy is not CopyMethod.NATIVE:
        return f"{fs} is copied raw ({volume.reason or 'not understood'})"
    if fs not in SHRINKABLE_FS:
        return f"{fs or 'unknown data'} cannot be shrunk"
    if part.size < SMALL:
        return "under 64 MiB"
    return ""


def floor(minimum: int, size: int) -> int:
    """The least a shrinkable volume gets: its minimum plus headroom, whole MiB, at most
    ``size``."""
    want = limits.round_up(minimum + max(minimum // 10, HEADROOM_MIN), MIB)
    return min(size, want)


@dataclass(frozen=True)
class Slot:
    """One data partition in the shrink: its source, its floor and its cap (the source size)."""

    part: Partition
    size: int  # the source size (rounded to the target's sectors)
    floor: int  # == size when it cannot shrink
    reason: str  # why it cannot shrink ("" when it can)

    @property
    def shrinkable(self) -> bool:
        return self.floor < self.size


def place(slots: Sequence[Slot], sizes: Sequence[int]) -> tuple[list[int], int]:
    """Starts for ``sizes`` keeping each partition's gap and 1 MiB alignment; and the end."""
    starts, end, prev_src_end = [], 0, 0
    for i, (slot, size) in enumerate(zip(slots, sizes, strict=True)):
        part = slot.part
        if i == 0:
            start = part.start
        else:
            start = end + max(0, part.start - prev_src_end)
            if part.start % MIB == 0:
                start = limits.round_up(start, MIB)
        starts.append(start)
        end = start + size
        prev_src_end = part.start + slot.size
    return starts, end


def shrink_sizes(
    slots: Sequence[Slot], target: tuple[int, int], last: bool, where: str
) -> list[int]:
    """The new size of every slot on a target of ``target`` (size, usable end), or
    TargetTooSmallError with the numbers."""
    target_end = target[1]
    sizes = [s.floor for s in slots]
    _, end = place(slots, sizes)
    if end > target_end:
        raise TargetTooSmallError(_refusal(slots, end, target, where))
    extra = target_end - end
    order = [i for i, s in enumerate(slots) if s.shrinkable]
    if last:
        for i in reversed(order):
            give = min(extra, slots[i].size - sizes[i]) // MIB * MIB
            sizes[i] += give
            extra -= give
        return sizes
    while extra >= MIB and order:  # water-filling: capped partitions pass their share on
        weight = sum(slots[i].size for i in order)
        given, capped = 0, []
        for i in order:
            give = min(extra * slots[i].size // weight, slots[i].size - sizes[i]) // MIB * MIB
            sizes[i] += give
            given += give
            if sizes[i] + MIB > slots[i].size:
                capped.append(i)
        extra -= given
        order = [i for i in order if i not in capped]
        if not given:
            break
    return sizes


def _refusal(slots: Sequence[Slot], end: int, target: tuple[int, int], where: str) -> str:
    rows = []
    for s in slots:
        name = region_name(s.part.number)
        if s.shrinkable:
            rows.append(f"{name} needs {human_size(s.floor)} (its data and headroom)")
        else:
            rows.append(f"{name} keeps {human_size(s.size)} ({s.reason})")
    size, usable_end = target
    short = end - usable_end
    needed = size + short
    return (
        f"the target holds {human_size(size)} ({size} bytes); even shrunk, the data of {where}"
        f" needs {human_size(needed)} ({needed} bytes), {human_size(short)} ({short} bytes)"
        f" more: {'; '.join(rows)}; nothing was written"
    )


def slots_for(
    data: Sequence[tuple[Partition, Volume | None]],
    sizes: Sequence[int],
    minimums: Mapping[int, int],
    fixed_types: set[str],
) -> list[Slot]:
    """A Slot per data partition; those with a minimum in ``minimums`` may shrink."""
    out = []
    for (part, vol), size in zip(data, sizes, strict=True):
        reason = why_fixed(part, vol, fixed_types)
        if not reason and part.number not in minimums:
            reason = "its minimum size is not known"
        low = floor(minimums[part.number], size) if not reason else size
        out.append(Slot(part, size, low, reason))
    return out


OVERLAY_MARGIN = 64 << 20  # metadata a resizer rewrites, per volume


def overlay_bound(volume: Volume | None, new_size: int) -> int:
    """The most a shrunk volume's copy-on-write overlay is expected to hold: the data that lies
    past its new end (the resizer moves it) and the metadata it rewrites. ``volume.used`` must
    hold the volume's extents (an image manifest's volume has none: its records count)."""
    if volume is None:
        return 0
    beyond = sum(max(0, e.end - max(e.start, new_size)) for e in volume.used)
    return beyond + OVERLAY_MARGIN
