"""The receiver's feed into the one target path: frames restored *as they arrive, in any order*.

When the catalog arrives, the restore is planned exactly as a restore of the same image would be
(restore/placements.py: placements, target size, a grown layout) and the target path is opened,
which makes every refusal (guard, size, sector size) before anything is written. Each complete
frame is queued to the target path's writer thread, which decodes it, checks its xxh3-128 and
writes it at each of its places (a duplicate chunk crosses the network once); the parts of raw
areas where tables live are held and written last by the target path, like every restore.
A frame that fails its hash stops the receive (its datagrams were authentic, so the sender's
image is bad).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from clonebay.engine.multicast.catalog import Catalog, parse_catalog
from clonebay.engine.restore.placements import (
    RestoreOptions,
    plan_target,
    unreadable_note,
)
from clonebay.engine.target import TargetPath
from clonebay.imaging.codec import DecodeError, decode_payload
from clonebay.imaging.manifest import Manifest
from clonebay.imaging.spec import FLAG_UNREADABLE, ImageError
from clonebay.model import Progress
from clonebay.net.receiver import ReceiveStatus
from clonebay.system.blockdev import is_block_device
from clonebay.system.run import run

WRITE_BEHIND = 16 << 20  # bytes written between two starts of writeback (TargetDevice)


class MulticastRestore:
    """The receiver's sink: places frames on the target in whatever order they complete."""

    def __init__(
        self,
        target: str,
        options: RestoreOptions,
        progress: Callable[[Progress], None] | None,
        cancel: threading.Event | None,
        on_manifest: Callable[[Manifest], None] | None = None,
    ) -> None:
        self.on_manifest = on_manifest
        self.target = target
        self.options = options
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.path: TargetPath | None = None
        self.catalog: Catalog | None = None
        self.warnings: list[str] = []
        # object -> where it goes: (target offset, region name, held?)
        self.places: list[list[tuple[int, str, bool]]] = []
        self.started = time.monotonic()
        self.last_progress = 0.0

    def prepare(self, catalog: bytes, sizes: Sequence[int]) -> None:
        """Plan the restore and open the target; refusals happen here, before any write."""
        cat = parse_catalog(catalog, list(sizes))
        self.catalog = cat
        manifest = cat.manifest
        if self.on_manifest is not None:
            self.on_manifest(manifest)
        plan = plan_target(
            "receive",
            manifest,
            self.target,
            self.options,
            lambda entry: sum(r.length for r in cat.records[entry.name]),
        )
        job, placements = plan.job, plan.placements
        # the disk works while frames arrive, so the final fsync is short
        path = TargetPath(
            job,
            progress=self.progress,
            cancel=self.cancel,
            write_behind=WRITE_BEHIND,
            report_writes=False,
        )
        self.path = path
        self.places = [[] for _ in cat.objects]
        zeros: list[tuple[str, int, int, bool]] = []
        for place in placements:
            held = job.whole_disk and place.region.kind == "raw-area"
            name = place.region.name
            for rec, number in zip(cat.records[name], cat.uses[name], strict=True):
                at = place.target_offset + rec.offset
                if number >= 0:
                    self.places[number].append((at, name, held))
                else:
                    zeros.append((name, at, rec.length, held))
                    if rec.flags & FLAG_UNREADABLE:
                        self.warnings.append(unreadable_note(name, rec.offset, rec.length))
        with path.writing():
            path.begin()
            path.call(lambda: self._zero_runs(zeros))

    def _zero_runs(self, zeros: list[tuple[str, int, int, bool]]) -> None:
        """ZERO and UNREADABLE records (in the writer thread, before the first frame)."""
        assert self.path is not None
        for name, at, length, held in zeros:
            if held:
                self.path.hold(name, at, None, length, now=True)
            else:
                self.path.zero_now(name, at, length)

    def put(self, number: int, body: bytearray) -> None:
        """Queue a complete frame for the writer thread (blocks while the queue is full: the
        socket buffer takes up the slack, and the sender slows down if it overflows)."""
        assert self.path is not None
        with self.path.writing():
            self.path.call(lambda: self._write(number, body))

    def _write(self, number: int, body: bytearray) -> None:
        assert self.path is not None and self.catalog is not None
        info = self.catalog.objects[number]
        try:
            data = decode_payload(info.codec, body, info.raw_length, info.digest)
        except DecodeError as exc:
            where = self.places[number][0][1] if self.places[number] else "?"
            raise ImageError(f"frame of region {where} from the sender: {exc}") from None
        for at, name, held in self.places[number]:
            if held:
                self.path.hold(name, at, data, len(data), now=True)
            else:
                self.path.write_now(name, at, data, info.digest)

    def finish(self) -> list[str]:
        """After the last frame: the raw areas (partition table last), fsync, verify, fixups,
        the count check."""
        assert self.path is not None
        with self.path.writing():
            result = self.path.finish()
        self.path.close()
        if is_block_device(self.target):
            run(["blockdev", "--rereadpt", self.target], check=False)
        self.warnings += result.warnings + list(self.path.job.notes) + result.done
        return self.warnings

    def close(self) -> None:
        if self.path is not None:
            self.path.close()

    def report(self, status: ReceiveStatus) -> None:
        """Receiver status -> a restore Progress event (at most twice a second)."""
        now = time.monotonic()
        if self.progress is None or (now - self.last_progress < 0.5 and status.state != "ok"):
            return
        self.last_progress = now
        rate = status.done / max(now - self.started, 1e-6)
        eta = (status.total - status.done) / rate if rate else None
        self.progress(Progress("multicast", status.done, status.total, rate, eta, status.state))
