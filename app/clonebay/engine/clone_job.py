"""The clone job: a disk (or one volume) straight onto another disk or a disk image file.

The clone reads; the one target path (engine/target/) writes. First the guard (before the source
is even probed), then the Plan (layout/plan.py), both before any write; then each partition's
used extents go through the copy pipeline (no compression; zero chunks of raw volumes are
skipped on a fresh file and zeroed elsewhere) into the target path, which wipes old signatures
first, holds the areas outside partitions (boot code, post-MBR gap, GPT, EBRs) and writes them
last, writes a new partition table when the layout changed, verifies by reading back, runs the
fixups (hidden sectors, filesystem growth; never on a hibernated volume) and ends with the count
check. A single volume (a partition, or a disk with no table) is cloned as one region.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from clonebay.engine.decrypted import check_rescue, decrypted_views
from clonebay.engine.inspect import DiskReport, inspect_disk, outside_partitions
from clonebay.engine.layout.plan import (
    Grow,
    Move,
    NeedsShrinkError,
    Plan,
    make_plan,
    volume_plan,
)
from clonebay.engine.locked import check_keys, volumes_of
from clonebay.engine.pipeline import Chunk, Pipeline, ReadTask
from clonebay.engine.rescue.clone import default_map, domain, rescue_rest, rescued
from clonebay.engine.rescue.reader import RescueOptions, Rescuer
from clonebay.engine.resume.checkpoints import CHECKPOINT_EVERY
from clonebay.engine.resume.clone import (
    clone_journal,
    durable_source,
    journals_done,
    tasks_after,
)
from clonebay.engine.shrink import steps
from clonebay.engine.shrink.view import Base
from clonebay.engine.target import RegionPlan, TargetJob, TargetPath, checks
from clonebay.engine.target.fanout import (
    FanOut,
    StateSink,
    TargetOutcome,
    open_paths,
)
from clonebay.errors import DeviceError, UsageError
from clonebay.fs import extents
from clonebay.fs.keyring import Keyring
from clonebay.imaging.codec import is_zero_chunk
from clonebay.model import CopyMethod, Extent, Partition, Progress, VolumeState
from clonebay.system.blockdev import ByteSource, SourceDevice, is_block_device
from clonebay.system.directio import DirectFile
from clonebay.system.run import run

CHUNK = 4 << 20


@dataclass(frozen=True)
class CloneOptions:
    grow: Grow = Grow.PROPORTIONAL
    verify: bool = True
    workers: int = 2
    allow_mounted_source: bool = False  # clone a source with read-write mounts (warned)
    allow_truncated: bool = False  # a partition past the source's end: zero the missing tail
    whole_disk: bool = False  # a single volume onto a disk that holds a partition table
    fit: Grow = Grow.PROPORTIONAL  # onto a smaller disk: how the room beyond the minimums is shared
    scratch: str = ""  # where shrink overlays live ("": $CLONEBAY_SCRATCH or the temp folder)
    rescue: RescueOptions | None = None  # read a failing source (engine/rescue/)
    resume: bool = False  # go on with the interrupted clone onto the target (engine/resume/)
    checkpoint_every: float = CHECKPOINT_EVERY  # seconds between two (engine/resume/)
    keys: Keyring | None = None  # secrets for locked volumes (fs/keyring.py)


@dataclass
class CloneResult:
    plan: Plan
    copied_bytes: int = 0
    verified_chunks: int = 0
    done: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unreadable: tuple[Extent, ...] = ()  # --rescue: source ranges left unreadable (zeros)
    rescue_map: str = ""


def _plan(report: DiskReport, target: str, options: CloneOptions, minimums: dict[int, int]) -> Plan:
    """The Plan onto ``target``; onto a smaller disk, a shrinking one (the minimums measured
    once per source, in ``minimums``)."""
    target_size = checks.target_size(target, report.table.disk_size)
    sector = checks.logical_sector_size(target) if os.path.exists(target) else None
    if report.whole_disk is not None:
        return volume_plan(report, target_size, options.grow, target_sector_size=sector)
    try:
        return make_plan(
            report,
            target_size,
            options.grow,
            target_sector_size=sector,
            allow_truncated=options.allow_truncated,
        )
    except NeedsShrinkError as exc:
        wanted = {n for n in exc.candidates if n not in minimums}
        parts = {pr.partition.number: pr for pr in report.partitions}
        minimums.update(
            steps.minimums(
                {n: (_base(report.path, parts[n].partition), parts[n].volume) for n in wanted},
                options.scratch,
            )
        )
        return make_plan(
            report,
            target_size,
            options.fit,
            target_sector_size=sector,
            allow_truncated=options.allow_truncated,
            minimums={n: minimums[n] for n in exc.candidates},
        )


def _base(disk: str, part: Partition) -> Base:
    return Base(part.size, disk=disk, offset=part.start)


def clone_plan(source: str, target: str, options: CloneOptions = CloneOptions()) -> Plan:
    """Check the guards and make the Plan; writes nothing."""
    checks.preflight(source, target, options.allow_mounted_source)
    report = inspect_disk(source, options.keys)
    check_keys(report, options.keys)
    return _plan(report, target, options, {})


def _used(move: Move) -> tuple[Extent, ...]:
    assert move.volume is not None
    return extents.clip(move.volume.used, move.source.size)


def clone_job(
    report: DiskReport, plan: Plan, source: str, target: str, options: CloneOptions
) -> TargetJob:
    """The clone as the target path sees it: regions, held areas, the layout and its table."""
    single = report.whole_disk is not None
    regions = [
        RegionPlan(
            m.name,
            m.target_start,
            m.target_size,
            sum(e.length for e in _used(m)) if m.volume else 0,
            fstype=m.volume.fstype if m.volume else "",
            state=m.volume.state if m.volume else VolumeState.UNKNOWN,
            editable=m.editable,
        )
        for m in plan.moves
    ]
    exact = plan.same_layout and plan.target_size == plan.source_size
    if not single:
        areas = outside_partitions(report)
        if not exact:  # only the head (boot code, post-MBR gap): a new table follows
            first = min((p.start for p in report.table.partitions), default=0)
            areas = extents.intersect(areas, (Extent(0, first),))
        regions += [RegionPlan(_area(a), a.start, a.length, a.length, held=True) for a in areas]
    return TargetJob(
        "clone",
        target,
        plan.target_size,
        tuple(regions),
        sector_size=plan.target_sector_size,
        source=source,
        allow_mounted_source=options.allow_mounted_source,
        whole_disk=not single,
        allow_table_overwrite=options.whole_disk,
        layout=plan,
        new_table=not single and not exact,
        table_kind=report.table.kind,
        first_usable=report.table.first_usable,
        zero_tails=plan.zero_tails,
        verify=options.verify,
        notes=plan.notes,
    )


def _area(area: Extent) -> str:
    return f"area@{area.start}"


def _tasks(
    plan: Plan,
    fd: DirectFile | int,
    overlays: dict[str, steps.Overlay],
    views: dict[str, ByteSource],
) -> Iterator[ReadTask]:
    """The reads: each move's used extents; a shrunk move's changed ranges from its overlay;
    a decrypted move's from its plaintext view (engine/decrypted.py)."""
    for move in plan.moves:
        if move.volume is None:
            continue
        view = views.get(move.name)
        if view is not None:
            yield from steps.read_tasks(move.name, _used(move), view, 0, None, CHUNK)
            continue
        overlay = overlays.get(move.name)
        yield from steps.read_tasks(move.name, _used(move), fd, move.source.start, overlay, CHUNK)


class _Sink:
    """Hands each chunk to every live target at its planned offset (in the pipeline's thread).
    Every target writes from the same pool buffer, kept until its writer thread is done with
    it (Chunk.keep): no copies, and memory bounded by the pool however many targets. A
    rescue's unread chunk is not written yet: the later passes write what they read of it,
    and zeros where it stays unreadable (engine/rescue/clone.py)."""

    def __init__(
        self,
        fan: FanOut,
        plans: dict[str, Plan],
        rescuer: Rescuer | None,
        checkpoint: Callable[..., None],
        every: float,
    ) -> None:
        self.fan = fan
        self.moves = {t: {m.name: m for m in plan.moves} for t, plan in plans.items()}
        self.rescuer = rescuer
        self.checkpoint = checkpoint  # (stage=, move=, next=): every target's journal
        self.every = every
        self.last = time.monotonic()

    def __call__(self, chunk: Chunk, result: tuple[bytes, bool]) -> None:
        if self.rescuer is not None:
            self.rescuer.delivered(chunk.source_offset, chunk.data.nbytes, chunk.missing)
        if self.rescuer is None or not chunk.missing:
            self._put(chunk, result)
        if time.monotonic() - self.last >= self.every:
            self.checkpoint(stage="copy", move=chunk.region, next=chunk.offset + chunk.data.nbytes)
            self.last = time.monotonic()

    def _put(self, chunk: Chunk, result: tuple[bytes, bool]) -> None:
        digest, is_zero = result

        def put(path: TargetPath) -> None:
            move = self.moves[path.job.target][chunk.region]
            at = move.target_start + chunk.offset
            raw = move.volume is not None and move.volume.copy is CopyMethod.RAW
            if is_zero and raw:
                path.put_zero(chunk.region, at, chunk.data.nbytes)
            else:
                path.put(chunk.region, at, chunk.data, digest, chunk.keep())

        self.fan.each(put)


def _hash(chunk: Chunk) -> tuple[bytes, bool]:
    """xxh3-128 of the chunk and whether it is all zeros (by comparing with the zero hash)."""
    digest = xxhash.xxh3_128_digest(chunk.data)
    return digest, is_zero_chunk(chunk.data, digest)


def _hold_areas(src: SourceDevice, fan: FanOut, rescuer: Rescuer | None) -> None:
    """The areas outside partitions, read once and held by each target path until the end
    (with --rescue, sector by sector where a read fails: bad sectors are held as zeros)."""
    read: dict[Extent, bytes | None] = {}

    def hold(path: TargetPath) -> None:
        for region in path.job.regions:
            if not region.held:
                continue
            for piece in extents.split((Extent(region.target_offset, region.size),), CHUNK):
                if piece not in read:
                    data = (
                        rescuer.read_area(piece.start, piece.length)
                        if rescuer is not None
                        else read_exact(src.fd, piece.length, piece.start, src.path)
                    )
                    read[piece] = None if data.count(0) == len(data) else data
                path.hold(region.name, piece.start, read[piece], piece.length)

    fan.each(hold)


def read_exact(fd: int, length: int, offset: int, where: str) -> bytes:
    """``length`` bytes at ``offset``; DeviceError on a read error or a short read."""
    parts, got = [], 0
    while got < length:
        try:
            piece = os.pread(fd, length - got, offset + got)
        except OSError as exc:
            raise DeviceError(
                f"read error on {where} at byte {offset + got} (outside the partitions):"
                f" {exc.strerror}"
            ) from exc
        if not piece:
            raise DeviceError(f"{where}: unexpected end at byte {offset + got}")
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


def clone(
    source: str,
    target: str,
    options: CloneOptions = CloneOptions(),
    *,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> CloneResult:
    """Clone ``source`` onto ``target`` as the Plan says; returns what was done, or raises
    what stopped it (saying that the target is incomplete once anything was written)."""
    report, plans = clone_plans(source, [target], options)
    (outcome,) = _clone(
        source, report, plans, options, progress=progress, cancel=cancel, on_state=None
    )
    if outcome.error is not None:
        raise outcome.error
    return CloneResult(
        plans[target],
        outcome.written,
        outcome.verified_chunks,
        outcome.done,
        outcome.warnings,
        outcome.unreadable,
        outcome.rescue_map,
    )


def clone_plans(
    source: str, targets: Sequence[str], options: CloneOptions = CloneOptions()
) -> tuple[DiskReport, dict[str, Plan]]:
    """Every target checked (alone, and against the others) and planned; writes nothing."""
    checks.check_distinct(list(targets))
    if options.resume and len(targets) > 1:
        raise UsageError("--resume goes on with one target at a time: resume each on its own")
    for target in targets:
        checks.preflight(source, target, options.allow_mounted_source)
    report = inspect_disk(source, options.keys)
    check_keys(report, options.keys)
    check_rescue(volumes_of(report), options.rescue is not None)
    minimums: dict[int, int] = {}
    plans = {target: _plan(report, target, options, minimums) for target in targets}
    shrinking = {p.moves for p in plans.values() if p.shrinks}
    if shrinking and len({p.moves for p in plans.values()}) > 1:
        raise UsageError(
            "the targets need different layouts and at least one must be shrunk: clone onto"
            " smaller disks of different sizes one at a time; nothing was written"
        )
    for plan in plans.values():
        steps.check_room(plan, options.scratch)
    return report, plans


def clone_many(
    source: str,
    targets: Sequence[str],
    options: CloneOptions = CloneOptions(),
    *,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    on_state: StateSink | None = None,
) -> list[TargetOutcome]:
    """Clone ``source`` onto every target from one read (target/fanout.py); one outcome per
    target, in order. Refusals of any target raise before anything is written; after that a
    target that fails is only recorded, and the others go on."""
    report, plans = clone_plans(source, targets, options)
    return _clone(
        source, report, plans, options, progress=progress, cancel=cancel, on_state=on_state
    )


def _clone(
    source: str,
    report: DiskReport,
    plans: dict[str, Plan],
    options: CloneOptions,
    *,
    progress: Callable[[Progress], None] | None,
    cancel: threading.Event | None,
    on_state: StateSink | None,
) -> list[TargetOutcome]:
    targets = list(plans)
    cancel = cancel or threading.Event()
    first = plans[targets[0]]
    if options.rescue is not None and first.shrinks:
        raise UsageError(
            "clone --rescue cannot shrink onto a smaller disk: rescue onto a disk at least as"
            " large as the source (or save --rescue into an image), then shrink from the copy"
        )
    if not first.shrinks:
        return _copy(source, report, plans, options, progress, cancel, on_state, {})
    # shrunk in views before the target is opened: a resizer that fails writes nothing
    shrunk = steps.shrink_all(first, lambda m: _base(source, m.source), options.scratch)
    fds: list[int] = []
    try:
        overlays = {}
        for name, view in shrunk.views.items():
            fds.append(steps.open_overlay(view))
            overlays[name] = (fds[-1], view.changes)
        plans = dict.fromkeys(targets, shrunk.plan)
        outcomes = _copy(source, report, plans, options, progress, cancel, on_state, overlays)
        for outcome in outcomes:
            outcome.done[:0] = shrunk.done
        return outcomes
    finally:
        for fd in fds:
            os.close(fd)
        shrunk.discard()


def _copy(  # noqa: PLR0917 (the steps of _clone, split for the shrink's set-up)
    source: str,
    report: DiskReport,
    plans: dict[str, Plan],
    options: CloneOptions,
    progress: Callable[[Progress], None] | None,
    cancel: threading.Event,
    on_state: StateSink | None,
    overlays: dict[str, steps.Overlay],
) -> list[TargetOutcome]:
    targets = list(plans)
    first = plans[targets[0]]
    with SourceDevice(source) as src, contextlib.ExitStack() as bound:
        jobs = [clone_job(report, plans[t], source, t, options) for t in targets]
        journals = [clone_journal(src, job, plans[job.target], options) for job in jobs]
        state = journals[0].state if options.resume else {}
        parts = [(m.name, m.source.start, m.source.size, m.volume) for m in first.moves]
        views = bound.enter_context(decrypted_views(source, parts, options.keys))
        rescuer = _rescuer(src, source, targets, options, cancel)
        if rescuer is not None:
            bound.callback(rescuer.close)  # the disk's command timeout as it was, at the end
        if rescuer is not None and options.resume:  # the journal, not the map, tells what
            durable = durable_source(journals[0], first)  # is on the target: read the rest
            rescuer.settle(durable)
            rescuer.forget(extents.subtract(domain(first), durable))
        paths = open_paths(
            jobs, progress=progress, cancel=cancel, report_writes=False, journals=journals
        )
        with FanOut(paths, on_state) as fan:
            states = {j.target: dict(jl.state) for j, jl in zip(jobs, journals, strict=True)}

            def checkpoint(**changes: object) -> None:
                def one(path: TargetPath) -> None:
                    states[path.job.target].update(changes)
                    path.checkpoint(states[path.job.target])

                fan.each(one)

            def feed() -> None:
                stage = state.get("stage", "copy")
                if stage == "copy":
                    _copy_pass(src, plans, jobs, fan, options, rescuer, overlays, state,
                               progress, cancel, checkpoint, views)  # fmt: skip
                    checkpoint(stage="rescue" if rescuer is not None else "finish")
                if rescuer is not None and options.rescue is not None and stage != "finish":
                    rescue_rest(rescuer, plans, fan, options.rescue.retries)
                    checkpoint(stage="finish")
                _hold_areas(src, fan, rescuer)

            fan.run(feed)
            outcomes = fan.outcomes(lambda p: p.job.notes)
        journals_done(journals, outcomes)
        if rescuer is not None:
            rescued(rescuer, plans, outcomes)
    for outcome in outcomes:
        if outcome.touched and is_block_device(outcome.target):
            run(["blockdev", "--rereadpt", outcome.target], check=False)
    return outcomes


def _copy_pass(  # noqa: PLR0917 (the pipeline's parts, from _copy)
    src: SourceDevice,
    plans: dict[str, Plan],
    jobs: list[TargetJob],
    fan: FanOut,
    options: CloneOptions,
    rescuer: Rescuer | None,
    overlays: dict[str, steps.Overlay],
    state: dict[str, Any],
    progress: Callable[[Progress], None] | None,
    cancel: threading.Event,
    checkpoint: Callable[..., None],
    views: dict[str, ByteSource],
) -> None:
    """Pass 1: every used chunk read once and handed to every target (after a resume's
    checkpoint only)."""
    plan = plans[jobs[0].target]
    pipe: Pipeline[tuple[bytes, bool]] = Pipeline(
        _hash,
        _Sink(fan, plans, rescuer, checkpoint, options.checkpoint_every),
        workers=options.workers,
        buffers=_buffers(len(jobs)),
        chunk_size=CHUNK,
        cancel=cancel,
        progress=progress,
        rescue=rescuer.read if rescuer is not None else None,
    )
    # the reads are the same for every target: only where they land differs
    tasks: Iterable[ReadTask] = _tasks(plan, src.io, overlays, views)
    totals = {r.name: r.planned_bytes for r in jobs[0].regions if not r.held}
    if state:
        left = list(tasks_after(tasks, state, [m.name for m in plan.moves]))
        tasks, totals = left, dict.fromkeys(totals, 0)
        for task in left:
            totals[task.region] += task.length
    pipe.run(tasks, totals)


def _rescuer(
    src: SourceDevice,
    source: str,
    targets: list[str],
    options: CloneOptions,
    cancel: threading.Event,
) -> Rescuer | None:
    """The rescue of ``clone --rescue`` (None without it), its map where --mapfile says or in
    MAP_FOLDER, named after the source."""
    if options.rescue is None:
        return None
    path = Path(options.rescue.map_path) if options.rescue.map_path else default_map(source)
    command = f"clonebay clone --rescue {source} {' '.join(targets)}"
    return Rescuer.open(src, path, cancel, command, resume=options.resume)


def _buffers(targets: int) -> int:
    """Pool buffers (4 MiB each) for the read: 6 for one target, 2 more for each other one, at
    most 16 (64 MiB): targets written in parallel each want chunks in flight; the pool, not the
    number of targets, bounds the memory."""
    return min(16, 4 + 2 * targets)
