"""The one target path: how every writing job writes a disk.

Clone, restore from an image directory, restore from a stream, multicast and TCP receive all
describe their target as a TargetJob and then only *feed* data; the order that keeps a target
safe is kept here, once:

1. guard and plan checks (engine/target/checks.py), before the target is opened for writing;
2. wipe: the first and last MiB of the disk (old MBR/GPT, a stale backup GPT, md/LVM labels),
   and the head and tail of every region that gets a new place (a stale md 1.0 superblock at
   a partition's end would otherwise outlive a native copy, which writes only used blocks);
3. data, through bounded writer threads that take jobs in order (engine/target/writer.py),
   with direct I/O where the kernel allows it (system/directio.py);
4. raw areas that hold partition tables, held in memory until every region's data is written,
   then written from the end of the disk backwards, offset 0 last; when the layout changes the
   old table's sectors in the head area are zeroed, so an interrupted job never leaves a table
   that describes the old layout;
5. a read-back verify of every chunk written, from the medium, overlapping the copy: a window
   at a time, flushed and read back while later chunks are written (engine/target/verifier.py);
6. the new partition table (when the layout changed), then fixups: hidden sectors of moved
   NTFS/FAT volumes, filesystem growth, the GPT backup moved to the end of a larger target;
   hibernated or encrypted volumes are never edited;
7. a count check, as bmaptool's: per region, the bytes planned, written and read back must agree.
   A mismatch is an error, never a warning.

Any error after the first write says that the target is incomplete.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType

import xxhash

from clonebay.engine.layout import fixups
from clonebay.engine.layout.table_write import write_table
from clonebay.engine.target import checks
from clonebay.engine.target.job import TargetJob, TargetResult
from clonebay.engine.target.journal import Journal
from clonebay.engine.target.verifier import ZERO_DIGEST, Verifier, Written
from clonebay.engine.target.writer import OrderedWriter
from clonebay.errors import CancelledError, ClonebayError, DeviceError
from clonebay.fs import extents
from clonebay.model import Extent, Progress, Volume, VolumeState
from clonebay.system.blockdev import TargetDevice, is_block_device
from clonebay.system.run import run

WIPE = 1 << 20  # zeroed at each end of the disk and of every new region
MAX_HELD = 64 << 20  # raw-area bytes held in memory; real disks hold ~2 MiB outside partitions
EBR_SPOT = 64 << 10  # an extended boot record sits in the first sector of its area
MBR_TABLE = 446  # the MBR's partition entries and signature start here (boot code before)
WRITERS = 2  # writes in flight per target (1: 545 MB/s, 2: 783 MB/s with direct I/O here)

Buffer = bytes | bytearray | memoryview


class TargetPath:
    """One writing job's target, opened and checked; fed with ``put``; ended with ``finish``."""

    def __init__(
        self,
        job: TargetJob,
        *,
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
        write_behind: int = 0,
        report_writes: bool = True,
        journal: Journal | None = None,
    ) -> None:
        self.job = job
        self.journal = journal  # what is durable on the target, for --resume (journal.py)
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.report_writes = report_writes
        self.warnings = checks.preflight(job.source, job.target, job.allow_mounted_source)
        size = checks.target_size(job.target, job.needed)
        checks.check_job(job, size)
        self.dev = TargetDevice(job.target, size=job.needed, write_behind=write_behind)
        self.touched = False  # set by the first write: errors then say "incomplete"
        self.planned = {r.name: r.planned_bytes for r in job.regions}
        self.region_starts = {r.name: r.target_offset for r in job.regions}
        self.written = dict.fromkeys(self.planned, 0)
        self.lock = threading.Lock()  # counts and held areas: several writer threads
        self.verifier: Verifier | None = None
        self.held: list[tuple[str, int, int, bytes | None]] = []  # region, offset, length, data
        self.held_bytes = 0
        self.writer: OrderedWriter | None = None
        self.started = time.monotonic()
        self.last_report = 0.0
        self.done_bytes = 0

    # -- context and errors ------------------------------------------------------------------

    def __enter__(self) -> TargetPath:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.stop()
            self.writer = None
        if self.verifier is not None:
            self.verifier.stop()
            self.verifier = None
        self.dev.close()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around a feeder's work: any error after the first write says the target is
        incomplete (an OSError that escaped a lower layer becomes a DeviceError)."""
        try:
            yield
        except ClonebayError as exc:
            note = self.incomplete_note()
            if self.touched and not exc.message.endswith(note):
                exc.message += note
            raise
        except OSError as exc:
            error = DeviceError(f"{self.job.target}: {exc.strerror or exc}")
            if self.touched:
                error.message += self.incomplete_note()
            raise error from exc

    def incomplete_note(self) -> str:
        if self.dev.fresh:
            why = " (a new file, with no partition table yet)" if self.job.whole_disk else ""
        else:
            why = " (its old partition table was cleared)" if self.job.whole_disk else ""
        return f"\nthe {self.job.what} stopped: {self.job.target} is incomplete{why}"

    # -- wipe --------------------------------------------------------------------------------

    def begin(self) -> None:
        """Wipe where old signatures live, then start the writer thread. Call once, right
        before the first data."""
        self.touched = True
        if self.job.verify:
            self.verifier = Verifier(self.dev, self.cancel, self.progress)
        resumed = self.journal.written if self.journal is not None else []
        for before in resumed:  # written before: counted, and read back like any run
            self.written[before.region] = self.written.get(before.region, 0) + before.length
            self.done_bytes += before.length
            if self.verifier is not None:
                self.verifier.add(before)
        if not self.dev.fresh and not resumed:  # (a resumed target was wiped: data follows)
            size = self.dev.size
            spots = [Extent(0, min(WIPE, size)), Extent(max(0, size - WIPE), min(WIPE, size))]
            for region in self.job.regions:
                if region.held:
                    continue
                end = region.target_offset + region.size
                spots.append(Extent(region.target_offset, min(WIPE, region.size)))
                tail_start = max(region.target_offset, end - WIPE)
                spots.append(Extent(tail_start, end - tail_start))
            for spot in extents.normalize([s for s in spots if s.length > 0]):
                self.dev.zero(spot.start, spot.length)
        for tail in self.job.zero_tails:
            self.dev.zero(tail.start, tail.length)
            if self.verifier is not None:
                self.verifier.add(Written("", tail.start, tail.length, ZERO_DIGEST))
        self.writer = OrderedWriter(self.cancel, threads=WRITERS)

    # -- feeding -----------------------------------------------------------------------------

    def put(
        self,
        region: str,
        offset: int,
        data: Buffer,
        digest: bytes,
        release: Callable[[], None] | None = None,
    ) -> None:
        """Queue ``data`` for ``offset`` of the target. The path owns ``data`` until it is
        written; ``release`` (if given) is called then, or when the write is skipped."""
        self._writer().put(lambda: self.write_now(region, offset, data, digest), release)

    def put_zero(self, region: str, offset: int, length: int) -> None:
        """Queue a run of zeros (a ZERO or UNREADABLE record, a zero chunk of a raw copy)."""
        self._writer().put(lambda: self.zero_now(region, offset, length))

    def call(self, job: Callable[[], None]) -> None:
        """Queue ``job`` to run in the writer thread (it may call ``write_now``/``hold``)."""
        self._writer().put(job)

    def drain(self) -> None:
        """Wait until everything queued is written."""
        self._writer().drain()

    def write_now(self, region: str, offset: int, data: Buffer, digest: bytes) -> None:
        """Write at once: in the writer thread, or in the caller's after ``drain``."""
        self.dev.write_at(memoryview(data), offset)
        self._count(region, offset, len(memoryview(data)), digest)

    def zero_now(self, region: str, offset: int, length: int) -> None:
        self.dev.zero(offset, length)
        self._count(region, offset, length, ZERO_DIGEST)

    def hold(
        self, region: str, offset: int, data: Buffer | None, length: int, *, now: bool = False
    ) -> bool:
        """A raw area's bytes (None: zeros). Those where partition tables live (the first and
        last MiB of the disk, the first sectors of an area: an EBR) are held and written after
        every region's data; the rest of a large area is written in order like any data
        (``now``: at once, when called from the writer thread). True when held."""
        if not self._table_spot(region, offset, length):
            if data is None:
                (self.zero_now if now else self.put_zero)(region, offset, length)
            else:
                digest = xxhash.xxh3_128_digest(data)
                (self.write_now if now else self.put)(region, offset, data, digest)
            return False
        with self.lock:
            if data is not None:
                self.held_bytes += length
            if self.held_bytes > MAX_HELD:
                raise DeviceError(
                    f"more than {MAX_HELD >> 20} MiB of partition-table data outside the"
                    f" partitions (region {region}): that is not a disk layout clonebay knows"
                )
            self.held.append((region, offset, length, None if data is None else bytes(data)))
        return True

    def _table_spot(self, region: str, offset: int, length: int) -> bool:
        start = self.region_starts.get(region, offset)
        ends = {self.job.needed, self.dev.size}
        spots = [Extent(0, WIPE), Extent(start, EBR_SPOT)]
        spots += [Extent(max(0, end - WIPE), WIPE) for end in ends]
        return bool(extents.intersect((Extent(offset, length),), extents.normalize(spots)))

    def read_back(self, offset: int, length: int, digest: bytes, what: str) -> bytes:
        """Bytes already written at ``offset`` (a stream's REF to an earlier frame), read from
        the target and checked against ``digest``."""
        self.drain()
        data = self.dev.read(length, offset)
        if xxhash.xxh3_128_digest(data) != digest:
            raise DeviceError(
                f"{self.job.target}: {what}, but reading it back at byte {offset} gave other"
                " bytes than were written (is the target failing?)"
            )
        return data

    def _writer(self) -> OrderedWriter:
        if self.writer is None:
            raise RuntimeError("TargetPath.begin() was not called")
        return self.writer

    def checkpoint(self, state: dict[str, object]) -> None:
        """Everything queued is written and flushed, then recorded with ``state`` in the
        journal: a resumed job goes on from here."""
        if self.journal is None:
            return
        self.drain()
        self.dev.sync()
        self.journal.commit(state)

    def _count(self, region: str, offset: int, length: int, digest: bytes) -> None:
        """A run is written (any writer thread): count it, hand it to the verifier."""
        run = Written(region, offset, length, digest)
        if self.verifier is not None:
            self.verifier.add(run)
        if self.journal is not None:
            self.journal.add(run)
        with self.lock:
            self.written[region] = self.written.get(region, 0) + length
            self.done_bytes += length
            done = self.done_bytes
            now = time.monotonic()
            total = self.job.planned_bytes
            due = now - self.last_report > 0.5 or done >= total
            if due:
                self.last_report = now
        if due and self.report_writes and self.progress is not None:
            rate = done / max(now - self.started, 1e-6)
            eta = (total - done) / rate if rate else None
            self.progress(Progress(region, done, total, rate, eta, "write"))

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> TargetResult:
        """Held areas, flush, verify, the new table and fixups, the count check."""
        self._writer().drain()
        self._writer().stop()
        self.writer = None
        self._write_held()
        self.dev.sync()
        result = TargetResult(dict(self.planned), dict(self.written), {})
        if self.verifier is not None:
            result.verified, result.verified_chunks = self.verifier.finish()
            self.verifier = None
        result.done.extend(self._fixups())
        result.warnings.extend(self.warnings)  # after the fixups: they add theirs
        self.dev.sync()
        self._count_check(result)
        return result

    def _write_held(self) -> None:
        """The raw areas, from the end of the disk backwards: the table at offset 0 last."""
        for region, offset, length, data in sorted(self.held, key=lambda h: -h[1]):
            if self.cancel.is_set():
                raise CancelledError("cancelled by the user")
            if data is None:
                self.zero_now(region, offset, length)
                continue
            put = (
                _scrub_tables(data, self.job.first_usable)
                if offset == 0 and self.job.new_table
                else data
            )
            self.write_now(region, offset, put, xxhash.xxh3_128_digest(put))

    def _fixups(self) -> list[str]:
        """The new table, then edits of moved volumes; hibernated and encrypted ones never."""
        job, done = self.job, []
        plan = job.layout
        if plan is not None and job.new_table:
            write_table(job.target, plan.target_table)
            larger = plan.target_size > plan.source_size
            done.append(
                "partition table written for the larger disk"
                if larger
                else f"partition table written for the new layout ({plan.target_table.kind})"
            )
        if plan is not None:
            sector = plan.target_table.sector_size
            for move in plan.moves:
                vol = move.volume
                fstype = vol.fstype if vol else ""
                needs_patch = move.moved and fstype in fixups.HIDDEN_SECTOR_FS
                if not (needs_patch or move.grow_fs):
                    continue
                if not move.editable:
                    self.warnings.append(f"{move.name}: {fstype} not edited ({_why(vol)})")
                    continue
                if needs_patch:
                    fixups.patch_hidden_sectors(self.dev, move, sector)
                    done.append(f"{move.name}: hidden sectors set to {move.target_start // sector}")
            self.dev.sync()
            for move in plan.moves:
                if move.grow_fs and move.editable:
                    done.append(fixups.grow_filesystem(job.target, move))
        elif job.whole_disk and job.table_kind == "gpt" and self.dev.size > job.needed:
            run(["sgdisk", "-e", job.target])
            done.append("GPT backup header moved to the end of the larger target")
        if not job.whole_disk:
            done.extend(self._volume_fixups())
        return done

    def _volume_fixups(self) -> list[str]:
        """A single volume written onto a partition (or a whole disk): its boot sectors must
        name where it starts now (NTFS/FAT hidden sectors)."""
        region = self.job.regions[0]
        if region.fstype not in fixups.HIDDEN_SECTOR_FS:
            return []
        start = checks.partition_start_sectors(self.job.target)
        if start is None and not is_block_device(self.job.target):
            return []  # a volume file: a copy of the volume, not placed on a disk
        if not region.editable:
            self.warnings.append(
                f"{region.name}: {region.fstype} is {region.state.value}: hidden sectors not"
                " patched (the volume is not edited)"
            )
            return []
        sector = self.job.sector_size
        value = (start or 0) * 512 // sector
        fixups.patch_hidden_sectors_at(self.dev, 0, region.size, region.fstype, value)
        self.dev.sync()
        return [f"{region.name}: hidden sectors set to {value}"]

    def _count_check(self, result: TargetResult) -> None:
        """Per region: planned == written (and == read back, when verified)."""
        problems = []
        for name, planned in self.planned.items():
            wrote = self.written.get(name, 0)
            if wrote != planned:
                problems.append(f"region {name}: {planned} bytes planned, {wrote} written")
            elif self.job.verify and result.verified.get(name, 0) != wrote:
                problems.append(
                    f"region {name}: {wrote} bytes written, {result.verified.get(name, 0)}"
                    " read back"
                )
        if problems:
            raise DeviceError(
                f"count check of {self.job.target} failed: " + "; ".join(problems[:5])
            )


def _why(volume: Volume | None) -> str:
    if volume is None:
        return "no volume"
    if volume.state is VolumeState.HIBERNATED:
        return "hibernated: only the machine it came from should resume it"
    return f"{volume.state.value}, copied {volume.copy.value}"


def _scrub_tables(head: bytes, first_usable: int) -> bytes:
    """The head area with its partition table zeroed (MBR entries and signature, and a GPT's
    header and entries up to the first usable byte); boot code and the post-MBR gap stay."""
    out = bytearray(head)
    end = max(512, first_usable) if first_usable else 512
    out[MBR_TABLE : min(end, len(out))] = bytes(min(end, len(out)) - MBR_TABLE)
    return bytes(out)
