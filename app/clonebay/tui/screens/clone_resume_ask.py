"""An interrupted clone of the same two disks: resume it, start it again, or go back.

The clone flow shows this when the technician picks a source and one target and a clone of
that source onto that target stopped after a checkpoint (killed, crashed, cancelled, a disk
unplugged): its journal is still there (engine/clone_state.py). What the journal says is read
and checked in a worker (Services.interrupted_clone: the clone planned again, both disks and the
used blocks compared as ``clone --resume`` does) and put plainly: both disks as they were then,
the last checkpoint, where the clone had got to, how much of the data is on the target, and
whether it was a rescue. Resume goes on from the checkpoint, after the Confirm modal (the
target is written); Start again goes to the plan, and the new clone replaces the journal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clonebay.model import Disk
from clonebay.tui.screens.resume_ask import AskResume, when
from clonebay.tui.services import Services
from clonebay.tui.text import region_name
from clonebay.units import human_size

if TYPE_CHECKING:
    from clonebay.engine.jobs import DiskSeen, InterruptedClone


def seen(disk: DiskSeen) -> str:
    """ "/dev/sdb, Samsung SSD 870 (S5Y1...), 465.8 GiB": a disk as the journal recorded it."""
    ident = disk.model + (f" ({disk.serial})" if disk.serial else "")
    return ", ".join(part for part in (disk.path, ident, human_size(disk.size)) if part)


def stage_line(state: InterruptedClone) -> str:
    """Where the clone had got to at its last checkpoint."""
    if state.stage == "rescue":
        return (
            "It stopped in the rescue's later passes: every used block had been tried once;"
            " the unreadable parts were being read again."
        )
    if state.stage == "finish":
        return (
            "It stopped at the end: every partition's data was on the target; the areas outside"
            " the partitions, the partition table, the verify and the fixups were left."
        )
    where = f" (at {region_name(state.move)})" if state.move else ""
    return f"It stopped while copying the partitions' data{where}."


def on_target_line(state: InterruptedClone) -> str:
    """How much of the data is on the target: the journal's runs, of what the plan copies."""
    done = human_size(state.written_bytes)
    if not state.planned_bytes:
        return f"On the target: {done} of data (up to the last checkpoint)"
    share = state.written_bytes * 100 // state.planned_bytes
    return (
        f"On the target: {done} of {human_size(state.planned_bytes)} of data, {share} %"
        " (up to the last checkpoint)"
    )


def question(state: InterruptedClone | None, source: Disk, target: Disk) -> str:
    """What the modal says of the clone of ``source`` onto ``target`` (``state``: its
    journal)."""
    if state is None:
        return "That clone's journal is not there (any more): go back and pick again."
    head = f"A clone of {source.path} onto {target.path} did not finish (journal {state.journal})."
    again = (
        f"Start again goes to the plan and clones {source.path} onto {target.path} anew (a new"
        " journal replaces this one)."
    )
    if not state.resumable:
        return f"{head}\nIt cannot be resumed: {state.problem}\n\n{again}"
    lines = [
        head,
        "",
        f"Cloned from: {seen(state.source)}",
        f"Onto: {seen(state.target)}",
        f"Last checkpoint: {when(state.checkpointed)}",
        stage_line(state),
        on_target_line(state),
    ]
    if state.rescue:
        lines.append(f"It is a rescue: its map is {state.rescue_map}.")
    lines += [
        "",
        "Resume goes on from the last checkpoint and copies only what follows it, with the"
        " plan it was begun with; both disks and the source's used blocks are checked.",
        again,
    ]
    return "\n".join(lines)


class CloneResumeModal(AskResume["InterruptedClone"]):
    """An interrupted clone of ``source`` onto ``target``."""

    HEADING = "An interrupted clone of these disks"

    def __init__(self, services: Services, source: Disk, target: Disk) -> None:
        super().__init__(f"Reading the journal of the clone onto {target.path}…")
        self.services = services
        self.source = source
        self.target = target

    def read(self) -> InterruptedClone | None:
        return self.services.interrupted_clone(self.source.path, self.target.path)

    def question(self, state: InterruptedClone | None) -> str:
        return question(state, self.source, self.target)
