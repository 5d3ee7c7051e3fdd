"""``clone --resume``: go on with a clone that stopped, from its target's last checkpoint.

A clone checkpoints its target every few seconds (engine/target/journal.py) with this state:
the source and the target (size, model, serial), the fingerprint of what it copies (every
partition's place on both disks and the used runs it reads), the stage, and where the reading
stands: ``copy`` (pass 1, up to a partition's offset), ``rescue`` (pass 1 done, a rescue's later
passes left) or ``finish`` (every partition's data written: the areas outside the partitions,
the table, the fixups and the verify left). Resuming checks both disks and the fingerprint,
takes the journal's runs as written, and does only what follows; the target it ends with is
the one the uninterrupted clone would have written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clonebay.engine.layout.plan import Plan
from clonebay.engine.pipeline import ReadTask
from clonebay.engine.resume.checkpoints import reads_after
from clonebay.engine.resume.identity import (
    check_disk,
    check_fingerprint,
    disk_record,
    fingerprint,
    opened_by_key,
)
from clonebay.engine.target.fanout import TargetOutcome
from clonebay.engine.target.job import TargetJob
from clonebay.engine.target.journal import Journal, state_folder
from clonebay.errors import UsageError
from clonebay.fs import extents
from clonebay.model import Extent
from clonebay.system.blockdev import SourceDevice

if TYPE_CHECKING:
    from clonebay.engine.clone_job import CloneOptions

STAGES = ("copy", "rescue", "finish")


def journal_path(source: str, target: str, map_path: str) -> Path:
    """Beside ``--mapfile`` (a store survives a power cut), else in the state folder; named
    after both disks: by serial where they have one (a disk plugged in again may get another
    node name), else by name."""
    folder = Path(map_path).parent if map_path else state_folder()
    names = []
    for path in (source, target):
        serial = str(disk_record(path, 0)["serial"])
        names.append(serial or os.path.basename(path.rstrip("/")))
    return folder / re.sub(r"[^A-Za-z0-9_-]", "_", f"clone-{names[0]}-to-{names[1]}")


def plan_fingerprint(plan: Plan) -> str:
    """What the clone copies: each move's place on both disks and its used runs."""
    return fingerprint(
        (
            m.name,
            m.source.start * 2**64 + m.target_start,
            m.target_size,
            ((e.start, e.length) for e in (m.volume.used if m.volume else ())),
        )
        for m in plan.moves
    )


def plan_opened(plan: Plan) -> list[str]:
    """The moves whose encrypted volume a key opened (``opened_by_key``)."""
    return opened_by_key((m.name, m.volume) for m in plan.moves)


def job_state(src: SourceDevice, target: str, size: int, plan: Plan) -> dict[str, Any]:
    return {
        "kind": "clone",
        "source": disk_record(src.path, src.size),
        "target": disk_record(target, size),
        "fingerprint": plan_fingerprint(plan),
        "opened": plan_opened(plan),
        "stage": "copy",
        "move": "",
        "next": 0,
    }


def check_journal(journal: Journal, src: SourceDevice, target: str, size: int, plan: Plan) -> None:
    """UsageError unless the journal is of this source, this target and this plan."""
    state = journal.state
    if state.get("kind") != "clone" or state.get("stage") not in STAGES:
        raise UsageError(f"{journal.path} is not the journal of a clone")
    check_disk(state["source"], src.path, src.size, "source")
    check_disk(state["target"], target, size, "target")
    check_fingerprint(
        str(state.get("fingerprint")),
        plan_fingerprint(plan),
        src.path,
        (state.get("opened"), plan_opened(plan)),
    )


def tasks_after(
    tasks: Iterable[ReadTask], state: dict[str, Any], order: list[str]
) -> Iterator[ReadTask]:
    """The reads after the checkpoint: moves before its move are done, its move goes on from
    its next offset (none after pass 1)."""
    if state.get("stage") != "copy":
        return iter(())
    move = str(state.get("move", ""))
    done = set(order[: order.index(move)]) if move in order else set()
    return reads_after(tasks, done, move, int(state["next"]))


def durable_source(journal: Journal, plan: Plan) -> tuple[Extent, ...]:
    """Source positions whose data the journal holds as written."""
    moves = {m.name: m for m in plan.moves}
    out = []
    for run in journal.written:
        move = moves.get(run.region)
        if move is not None:
            out.append(Extent(move.source.start + run.offset - move.target_start, run.length))
    return extents.normalize(out)


def clone_journal(src: SourceDevice, job: TargetJob, plan: Plan, options: CloneOptions) -> Journal:
    """The target's journal: the interrupted clone's (checked) with --resume, else a new one."""
    rescue_map = options.rescue.map_path if options.rescue else ""
    path = journal_path(src.path, job.target, rescue_map)
    names = [r.name for r in job.regions]
    if not options.resume:
        journal = Journal.create(path, names)
        journal.state = job_state(src, job.target, plan.target_size, plan)
        return journal
    journal = Journal.load(path, names)
    check_journal(journal, src, job.target, plan.target_size, plan)
    return journal


def journals_done(journals: list[Journal], outcomes: list[TargetOutcome]) -> None:
    """A target done has nothing to resume; one that stopped after a checkpoint can."""
    for journal, outcome in zip(journals, outcomes, strict=True):
        if outcome.error is None:
            journal.discard()
        elif journal.length:
            outcome.error.message += (
                "\nrun the same clone with --resume to go on from its last checkpoint"
                f" (journal {journal.path}.json)"
            )
