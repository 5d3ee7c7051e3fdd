"""The clone job: a disk (or one volume) straight onto another disk or a disk image file.

Order on the target (DESIGN §5): guards first (system/guard.py) and the Plan (layout/plan.py),
both before any write; then old signatures are wiped (the first and last MiB of the disk, where
MBR, GPT and its backup, and md/LVM labels live, and of every new partition); then each
partition's used extents are copied through the pipeline (no compression; zero chunks of raw
volumes are skipped on a fresh file and zeroed elsewhere); then the areas outside partitions
(boot code, post-MBR gap) and last the partition table; fsync; verify by reading back every chunk
written and comparing its xxh3-128; then fixups (hidden sectors, filesystem growth) and a re-read
of the partition table by the kernel.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import xxhash

from clonebay.engine.inspect import DiskReport, inspect_disk, outside_partitions
from clonebay.engine.layout import fixups
from clonebay.engine.layout.plan import Grow, Move, Plan, make_plan
from clonebay.engine.layout.table_write import write_table
from clonebay.engine.pipeline import Chunk, Pipeline, ReadTask
from clonebay.errors import CancelledError, ClonebayError, VerifyError
from clonebay.fs import extents
from clonebay.imaging.codec import is_zero_chunk
from clonebay.model import CopyMethod, Extent, Partition, Progress
from clonebay.system import guard
from clonebay.system.blockdev import SourceDevice, TargetDevice, device_size, is_block_device
from clonebay.system.run import run

WIPE = 1 << 20
CHUNK = 4 << 20


@dataclass(frozen=True)
class CloneOptions:
    grow: Grow = Grow.PROPORTIONAL
    verify: bool = True
    workers: int = 2
    allow_mounted_source: bool = False  # clone a source with read-write mounts (warned)
    allow_truncated: bool = False  # a partition past the source's end: zero the missing tail
    whole_disk: bool = False  # a single volume onto a disk that holds a partition table


@dataclass
class CloneResult:
    plan: Plan
    copied_bytes: int = 0
    verified_chunks: int = 0
    done: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Written:
    """A chunk as written to the target, for the read-back verify."""

    target_offset: int
    length: int
    digest: bytes


def _target_size(target: str, source_size: int) -> int:
    if os.path.exists(target):
        fd = os.open(target, os.O_RDONLY)
        try:
            return device_size(fd)
        finally:
            os.close(fd)
    return source_size


def _whole_volume_plan(report: DiskReport, target_size: int, grow: Grow) -> Plan:
    """A device without a partition table (a partition, or a bare filesystem) as one volume."""
    vol = report.whole_disk
    assert vol is not None
    size = report.table.disk_size
    guard.check_size(target_size, size, f"the volume of {report.path}")
    part = Partition(0, 0, size, type_id="")
    grows = (
        grow is not Grow.NONE
        and target_size > size
        and vol.fstype in ("ext2", "ext3", "ext4", "ntfs")
        and vol.copy is CopyMethod.NATIVE
    )
    move = Move(0, part, 0, target_size if grows else size, vol, grows)
    fix = (f"grow {vol.fstype} to fill the target",) if grows else ()
    return Plan(size, target_size, grow, report.table, report.table, (move,), fix)


def clone_plan(source: str, target: str, options: CloneOptions = CloneOptions()) -> Plan:
    """Check the guards and make the Plan; writes nothing."""
    guard.check_target(source, target)
    report = inspect_disk(source)
    target_size = _target_size(target, report.table.disk_size)
    if report.whole_disk is not None:
        return _whole_volume_plan(report, target_size, options.grow)
    return make_plan(report, target_size, options.grow)


def _tasks(plan: Plan, fd: int) -> Iterator[ReadTask]:
    for move in plan.moves:
        if move.volume is None:
            continue
        runs = extents.clip(move.volume.used, move.source.size)
        for piece in extents.split(runs, CHUNK):
            yield ReadTask(
                str(move.number), piece.start, fd, move.source.start + piece.start, piece.length
            )


def _wipe(dev: TargetDevice, plan: Plan) -> None:
    """Zero where old partition tables and signatures live, on the disk and each new partition."""
    spots = [Extent(0, min(WIPE, dev.size)), Extent(max(0, dev.size - WIPE), min(WIPE, dev.size))]
    for m in plan.moves:
        spots.append(Extent(m.target_start, min(WIPE, m.target_size)))
        tail = max(m.target_start, m.target_start + m.target_size - WIPE)
        spots.append(Extent(tail, m.target_start + m.target_size - tail))
    for spot in extents.normalize(spots):
        dev.zero(spot.start, spot.length)


class _Sink:
    """Writes each chunk at its planned target offset and remembers it for the verify."""

    def __init__(self, dev: TargetDevice, plan: Plan) -> None:
        self.dev = dev
        self.moves = {str(m.number): m for m in plan.moves}
        self.written: list[Written] = []
        self.bytes = 0

    def __call__(self, chunk: Chunk, result: tuple[bytes, bool]) -> None:
        digest, is_zero = result
        move = self.moves[chunk.region]
        at = move.target_start + chunk.offset
        raw = move.volume is not None and move.volume.copy is CopyMethod.RAW
        if is_zero and raw:
            self.dev.zero(at, chunk.data.nbytes)  # nothing to do on a fresh file
        else:
            self.dev.write_at(chunk.data, at)
        self.written.append(Written(at, chunk.data.nbytes, digest))
        self.bytes += chunk.data.nbytes


def _hash(chunk: Chunk) -> tuple[bytes, bool]:
    """xxh3-128 of the chunk and whether it is all zeros (by comparing with the zero hash)."""
    digest = xxhash.xxh3_128_digest(chunk.data)
    return digest, is_zero_chunk(chunk.data, digest)


def _copy_areas(
    src: SourceDevice, dev: TargetDevice, report: DiskReport, plan: Plan, sink: _Sink
) -> None:
    """Copy the areas outside partitions: all of them when the layout is unchanged, else the
    head (boot code, partition table, post-MBR gap) before sfdisk rewrites the table."""
    areas = outside_partitions(report)
    exact = plan.same_layout and plan.target_size == plan.source_size
    if not exact:
        first = min((p.start for p in report.table.partitions), default=0)
        areas = extents.intersect(areas, (Extent(0, first),))
    for area in areas:
        for piece in extents.split((area,), CHUNK):
            data = os.pread(src.fd, piece.length, piece.start)
            if data.count(0) == len(data):
                dev.zero(piece.start, piece.length)
            else:
                dev.write_at(data, piece.start)
            sink.written.append(Written(piece.start, piece.length, xxhash.xxh3_128_digest(data)))
    if not exact:
        write_table(dev.path, plan.target_table)


def _verify(
    dev: TargetDevice,
    written: list[Written],
    skip_head: bool,
    progress: Callable[[Progress], None] | None,
    cancel: threading.Event | None,
) -> int:
    """Read back every chunk written, from the medium (the page cache is dropped first), and
    compare hashes; returns the number checked. Progress comes as region "verify", stage "read"."""
    dev.drop_cache()
    checked = [w for w in written if not (skip_head and w.target_offset < WIPE)]
    # (chunks in the first MiB are rewritten by sfdisk on purpose when the layout changed)
    total = sum(w.length for w in checked)
    bad = []
    done = 0
    started = last = time.monotonic()
    for w in checked:
        if cancel is not None and cancel.is_set():
            raise CancelledError("cancelled while verifying the target")
        if xxhash.xxh3_128_digest(os.pread(dev.fd, w.length, w.target_offset)) != w.digest:
            bad.append(w)
        done += w.length
        now = time.monotonic()
        if progress and (now - last > 0.5 or done == total):
            last = now
            rate = done / max(now - started, 1e-6)
            progress(Progress("verify", done, total, rate, (total - done) / rate, "read"))
    if bad:
        raise VerifyError(
            f"{dev.path}: {len(bad)} chunk(s) read back differ from what was written, first at"
            f" byte {bad[0].target_offset}: the target is unreliable"
        )
    return len(written)


def clone(
    source: str,
    target: str,
    options: CloneOptions = CloneOptions(),
    *,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> CloneResult:
    """Clone ``source`` onto ``target`` as the Plan says; returns what was done."""
    guard.check_target(source, target)
    report = inspect_disk(source)
    with SourceDevice(source) as src:
        plan_size = _target_size(target, report.table.disk_size)
        plan = (
            _whole_volume_plan(report, plan_size, options.grow)
            if report.whole_disk is not None
            else make_plan(report, plan_size, options.grow)
        )
        result = CloneResult(plan)
        with TargetDevice(target, size=plan.target_size) as dev:
            try:
                _write_all(
                    src,
                    dev,
                    report=report,
                    plan=plan,
                    result=result,
                    options=options,
                    progress=progress,
                    cancel=cancel,
                )
            except ClonebayError as exc:
                exc.message += f"\nthe clone stopped: {target} is incomplete"
                raise
    if is_block_device(target):
        run(["blockdev", "--rereadpt", target], check=False)
    return result


def _write_all(
    src: SourceDevice,
    dev: TargetDevice,
    *,
    report: DiskReport,
    plan: Plan,
    result: CloneResult,
    options: CloneOptions,
    progress: Callable[[Progress], None] | None,
    cancel: threading.Event | None,
) -> None:
    if report.whole_disk is None:
        _wipe(dev, plan)
    sink = _Sink(dev, plan)
    pipe: Pipeline[tuple[bytes, bool]] = Pipeline(
        _hash,
        sink,
        workers=options.workers,
        buffers=6,
        chunk_size=CHUNK,
        cancel=cancel,
        progress=progress,
    )
    totals = {str(m.number): m.volume.used_bytes for m in plan.moves if m.volume}
    pipe.run(_tasks(plan, src.fd), totals)
    if report.whole_disk is None:
        _copy_areas(src, dev, report, plan, sink)
    dev.sync()
    result.copied_bytes = sink.bytes
    if options.verify:
        rewritten = report.whole_disk is None and not (
            plan.same_layout and plan.target_size == plan.source_size
        )
        result.verified_chunks = _verify(dev, sink.written, rewritten, progress, cancel)
    sector = report.table.sector_size
    for move in plan.moves:
        fs = move.volume.fstype if move.volume else ""
        if move.moved and fs in ("ntfs", "fat12", "fat16", "fat32"):
            fixups.patch_hidden_sectors(dev, move, sector)
            result.done.append(
                f"p{move.number}: hidden sectors set to {move.target_start // sector}"
            )
    dev.sync()
    for move in plan.moves:
        if move.grow_fs:
            result.done.append(fixups.grow_filesystem(dev.path, move))
