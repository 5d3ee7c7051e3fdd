"""What a clone left on its target when it stopped, told before anyone goes on with it.

A clone keeps a journal for its target (engine/target/journal.py): the runs it made durable
there and a state (both disks, the fingerprint of its plan, the stage and the position). A
clone that stopped after a checkpoint keeps it; one that ended well removes it. A frontend
about to clone the same source onto the same target says what the journal holds — which disks,
how far it got, how much of the data is on the target, whether it was a rescue — and offers to
go on (``clone --resume``) or to start again. The journal is found where ``--resume`` looks for
it without ``--mapfile`` (the TUI never gives one): in the state folder, named after both disks.

Two readings: ``clone_journal`` only reads the journal (cheap: whether there is one, and what it
says); ``interrupted_clone`` also plans the clone again, as ``--resume`` will, and checks both
disks and the fingerprint, so "can be resumed" means the engine will take it. The fingerprint
holds every partition's place on the target, so it also tells which grow mode the interrupted
clone was planned with (each is tried, the default first, as long as the fingerprint differs);
the resume must use that one. Onto a smaller disk each plan measures the partitions' minimums
(engine/shrink/), so the question takes as long as the Plan screen does, up to three times.

Whether it was a rescue the journal does not record; ``clone --resume`` is told again
(``--rescue``). It is taken as one when its stage is ``rescue`` (pass 1 was over, the later
passes were left), or when the source's default rescue map (engine/rescue/clone.py; the TUI's
rescue keeps it there) was last written by a rescue clone of these two disks: its "Command
line" says so. A map that an earlier rescue clone of the same two disks left behind, one that
ended well, is taken for this one's too (a limit): the resume then runs as a rescue, which the
engine allows, since the journal, not the map, says what is on the target (Rescuer.settle).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clonebay.engine.clone_job import CloneOptions, clone_plan
from clonebay.engine.layout.plan import Grow, Plan
from clonebay.engine.rescue.clone import default_map
from clonebay.engine.rescue.reader import RescueOptions
from clonebay.engine.resume.clone import STAGES, journal_path, plan_fingerprint, plan_opened
from clonebay.engine.resume.identity import check_disk, check_fingerprint
from clonebay.engine.target.journal import Journal
from clonebay.errors import ClonebayError
from clonebay.fs import extents
from clonebay.fs.keyring import Keyring

AREA = "area@"  # the regions of the areas outside the partitions (clone_job._area): held, not data
COMMAND = "# Command line: "  # the rescue map's header line naming the job (rescue/mapfile.py)
UNSAID = (  # the ends of the resume's refusals that the question does not repeat, in this order
    "; nothing was written",
    ": nothing was written",
    ": it cannot be resumed; start the job again",
)


@dataclass(frozen=True)
class DiskSeen:
    """A disk as the journal recorded it when the clone began (its node may differ now)."""

    path: str = ""
    model: str = ""
    serial: str = ""
    size: int = 0


@dataclass(frozen=True)
class InterruptedClone:
    """A clone's journal and what it says. ``problem`` is why it cannot be resumed ("" when
    it can); the other fields are then what could be read."""

    journal: str  # its state file, NAME.json
    source: DiskSeen = DiskSeen()
    target: DiskSeen = DiskSeen()
    stage: str = ""  # copy (pass 1), rescue (a rescue's later passes), finish (the rest)
    move: str = ""  # stage copy: the region pass 1 had reached ("p1")
    written_bytes: int = 0  # the partitions' data the journal holds as on the target
    planned_bytes: int = 0  # the partitions' data the clone copies in all (0: not planned)
    grow: Grow | None = None  # the grow mode of the plan the journal was made for
    rescue_map: str = ""  # a rescue's map ("": not a rescue)
    checkpointed: float | None = None  # when the last checkpoint was taken
    problem: str = ""

    @property
    def rescue(self) -> bool:
        return bool(self.rescue_map)

    @property
    def resumable(self) -> bool:
        return not self.problem


def clone_journal(source: str, target: str) -> InterruptedClone | None:
    """What the journal of a clone of ``source`` onto ``target`` says, or None when there is
    none (no clone of them stopped after a checkpoint). Reads the journal only."""
    try:
        path = journal_path(source, target, "")
    except OSError:  # no state folder, and none can be made: no clone kept a journal there
        return None
    state_file = path.with_suffix(".json")
    if not state_file.is_file():
        return None
    checkpointed = _mtime(state_file)
    try:
        regions = [str(name) for name in json.loads(state_file.read_bytes())["regions"]]
        journal = Journal.load(path, regions)
    except ClonebayError as exc:
        return InterruptedClone(str(state_file), checkpointed=checkpointed, problem=exc.message)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problem = f"the journal {state_file} cannot be read: {exc}"
        return InterruptedClone(str(state_file), checkpointed=checkpointed, problem=problem)
    state = journal.state
    stage = str(state.get("stage", ""))
    source_seen, target_seen = _seen(state.get("source")), _seen(state.get("target"))
    found = InterruptedClone(
        str(state_file),
        source_seen,
        target_seen,
        stage,
        str(state.get("move", "")) if stage == "copy" else "",
        sum(r.length for r in journal.written if not r.region.startswith(AREA)),
        rescue_map=_rescue_map(source, source_seen, target_seen, stage),
        checkpointed=checkpointed,
    )
    if state.get("kind") != "clone" or stage not in STAGES:
        return dataclasses.replace(found, problem=f"{state_file} is not the journal of a clone")
    return found


def interrupted_clone(
    source: str, target: str, keys: Keyring | None = None
) -> InterruptedClone | None:
    """``clone_journal``, and whether ``clone --resume`` will take it: the clone planned again
    (with the grow mode whose plan the journal was made for, and ``keys``, those the resume
    will have), both disks and the fingerprint checked as the resume checks them. Writes
    nothing."""
    found = clone_journal(source, target)
    if found is None or not found.resumable:
        return found
    state = json.loads(Path(found.journal).read_bytes())["state"]
    recorded = str(state.get("fingerprint"))
    rescue = RescueOptions() if found.rescue else None
    mismatch = ""
    for grow in Grow:
        options = CloneOptions(grow=grow, fit=grow, rescue=rescue, keys=keys)
        try:
            plan = clone_plan(source, target, options)
            check_disk(state["source"], source, plan.source_size, "source")
            check_disk(state["target"], target, plan.target_size, "target")
        except ClonebayError as exc:
            return dataclasses.replace(found, problem=_unsaid(exc.message))
        try:
            opened = (state.get("opened"), plan_opened(plan))
            check_fingerprint(recorded, plan_fingerprint(plan), source, opened)
        except ClonebayError as exc:
            mismatch = mismatch or _unsaid(exc.message)
            continue  # another grow mode places the partitions elsewhere: try it
        return dataclasses.replace(found, grow=grow, planned_bytes=planned_bytes(plan))
    return dataclasses.replace(found, problem=mismatch)


def planned_bytes(plan: Plan) -> int:
    """The partitions' data the clone copies: every move's used blocks (on the source)."""
    return sum(
        e.length
        for m in plan.moves
        if m.volume is not None
        for e in extents.clip(m.volume.used, m.source.size)
    )


def _seen(record: Any) -> DiskSeen:
    if not isinstance(record, dict):
        return DiskSeen()
    path, model, serial = (str(record.get(k, "") or "") for k in ("path", "model", "serial"))
    return DiskSeen(path, model, serial, int(record.get("size", 0) or 0))


def _rescue_map(source: str, was: DiskSeen, onto: DiskSeen, stage: str) -> str:
    """The rescue's map when the interrupted clone was a rescue, else "" (see above)."""
    try:
        path = default_map(source)
        if stage == "rescue":
            return str(path)
        with open(path, encoding="utf-8", errors="replace") as f:
            head = [next(f, "") for _ in range(4)]
    except OSError:
        return ""
    command = f"clonebay clone --rescue {was.path} {onto.path}"
    said = [line.removeprefix(COMMAND).strip() for line in head if line.startswith(COMMAND)]
    return str(path) if said == [command] else ""


def _unsaid(message: str) -> str:
    """A refusal as the question tells it: nothing is being written yet."""
    for tail in UNSAID:
        message = message.removesuffix(tail)
    return message


def _mtime(path: Path) -> float | None:
    try:
        return os.path.getmtime(path)
    except OSError:
        return None
