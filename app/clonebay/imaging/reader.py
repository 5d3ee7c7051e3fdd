"""ImageReader: random access to the regions of an image directory, and a full verify.

Opening an image checks everything that is cheap to check: manifest.json exists (else the image
is incomplete), its format, version and checksum, every index file's size and xxh3-128 against the
manifest and every record in it, every pack's existence, exact size and header. Reading a range
binary-searches the region's index, reads only the frames that overlap it (one pread each),
checks each frame header against its index record and the decoded bytes against the record's
xxh3-128, so damaged bytes raise ImageError and are never returned. Bytes no record covers (free
space that was not copied) and ZERO / UNREADABLE records read as zeros. ``verify`` decodes every
frame once, in pack order, and reports every problem instead of stopping at the first.
"""

from __future__ import annotations

import bisect
import collections
import errno
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import xxhash

from clonebay.imaging import spec
from clonebay.imaging.codec import Buffer, zeros
from clonebay.imaging.frame_check import check_frame, decode_frame, frame_at
from clonebay.imaging.frame_stream import FrameStream
from clonebay.imaging.manifest import Manifest, RegionEntry, parse
from clonebay.imaging.spec import ImageError, IncompleteImageError, Record, where

MAX_MANIFEST = 64 << 20  # far above any real manifest; a bigger file is not ours
FRAME_CACHE = 4  # decoded frames kept for small sequential reads (FUSE reads 128 KiB)
MAX_OPEN_PACKS = 64  # open pack descriptors kept; well under the usual 1024 fd limit
ZERO_PIECE = 1 << 20


@dataclass(frozen=True)
class Problem:
    """One thing verify found wrong: the file, the region and region offset, and the message."""

    file: str
    region: str | None
    offset: int | None
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class ReadStats:
    """What random reads have cost so far: browsing asserts "a handful of frames", not a clock.

    ``frames_decoded`` counts frames read from a pack, checked and decoded (cache misses);
    ``cache_hits`` counts frames served from the decoded-frame cache; ``stored_bytes_read`` is
    frame headers + payloads read from packs; ``raw_bytes_decoded`` is what those frames decoded
    to; ``reads`` counts ``read_at`` calls.
    """

    reads: int = 0
    frames_decoded: int = 0
    cache_hits: int = 0
    stored_bytes_read: int = 0
    raw_bytes_decoded: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class VerifyReport:
    problems: list[Problem] = field(default_factory=list)
    frames: int = 0  # distinct frames decoded and hash-checked
    stored_bytes: int = 0  # frame headers + payloads read
    raw_bytes: int = 0  # decoded bytes

    @property
    def ok(self) -> bool:
        return not self.problems


class _Packs:
    """Open pack descriptors, shared by threads; an fd is closed only when no read uses it."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self._fds: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._busy: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()

    def pread(self, pack: int, length: int, offset: int) -> bytes:
        with self._lock:
            fd = self._fds.get(pack)
            if fd is None:
                fd = os.open(self.paths[pack], os.O_RDONLY | os.O_CLOEXEC)
                self._fds[pack] = fd
            self._fds.move_to_end(pack)
            self._busy[pack] += 1
        try:
            return os.pread(fd, length, offset)
        finally:
            with self._lock:
                self._busy[pack] -= 1
                self._evict()

    def _evict(self) -> None:
        for pack in list(self._fds):
            if len(self._fds) <= MAX_OPEN_PACKS:
                break
            if not self._busy[pack]:
                os.close(self._fds.pop(pack))

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


class ImageReader:
    """An opened, checked image directory; use as a context manager or call close()."""

    def __init__(self, path: str | os.PathLike[str], *, cache_frames: int = FRAME_CACHE) -> None:
        """Open and check ``path``; ``cache_frames`` decoded frames are kept for random reads
        (a browsing view keeps more: a filesystem driver returns to its metadata often)."""
        self.path = Path(path)
        self.cache_frames = max(1, cache_frames)
        self.stats = ReadStats()
        self._stats_lock = threading.Lock()
        self.manifest = _load_manifest(self.path)
        self.regions: tuple[RegionEntry, ...] = self.manifest.regions
        pack_sizes = [p.size for p in self.manifest.packs]
        self._records: dict[str, list[Record]] = {}
        self._offsets: dict[str, list[int]] = {}
        for region in self.regions:
            records = self._load_index(region, pack_sizes)
            self._records[region.name] = records
            self._offsets[region.name] = [r.offset for r in records]
        pack_paths = [self.path / spec.PACKS_DIR / p.name for p in self.manifest.packs]
        for number, pack_path in enumerate(pack_paths):
            try:
                self._check_pack(number, pack_path)
            except ImageError as exc:
                raise type(exc)(f"{exc} ({self._pack_users(number)})") from None
        self._packs = _Packs(pack_paths)
        self._cache: collections.OrderedDict[tuple[int, int], Buffer] = collections.OrderedDict()
        self._cache_lock = threading.Lock()

    # -- checks at open --------------------------------------------------------------------

    def _check_pack(self, number: int, path: Path) -> None:
        entry = self.manifest.packs[number]
        if entry.name != spec.pack_name(number):
            raise ImageError(
                f"{self.path / spec.MANIFEST_NAME}: pack {number} is named {entry.name}"
            )
        try:
            size = path.stat().st_size
            with path.open("rb") as f:
                head = f.read(spec.PACK_HEADER.size)
        except FileNotFoundError:
            raise ImageError(f"{path}: pack missing (the manifest lists it)") from None
        except OSError as exc:
            raise ImageError(f"{path}: cannot read pack ({exc.strerror})") from None
        if entry.size > self.manifest.pack_limit:
            raise ImageError(f"{path}: manifest size {entry.size} passes the pack limit")
        if size != entry.size:
            what = "truncated" if size < entry.size else "longer than written"
            raise ImageError(f"{path}: pack {what}: {size} bytes, manifest says {entry.size}")
        header = spec.parse_pack_header(head, str(path))
        if header.number != number or header.image_id.hex() != self.manifest.image_id:
            raise ImageError(
                f"{path}: pack header says pack {header.number} of image"
                f" {header.image_id.hex()}, expected pack {number} of {self.manifest.image_id}"
            )

    def _pack_users(self, number: int) -> str:
        """'holds region p1 from offset 0, region p2 from offset 4096': what a bad pack hurts."""
        first: dict[str, int] = {}
        for name, records in self._records.items():
            for rec in records:
                if rec.pack == number and not rec.flags:
                    first[name] = rec.offset
                    break
        where_used = ", ".join(f"region {name} from offset {off}" for name, off in first.items())
        return f"holds {where_used}" if first else "no index uses it"

    def _load_index(self, region: RegionEntry, pack_sizes: list[int]) -> list[Record]:
        path = self.path / spec.INDEX_DIR / region.index_file
        name = str(path)
        try:
            size = path.stat().st_size
            if size != region.index_size:
                raise ImageError(
                    f"{where(name, region.name)}: index is {size} bytes,"
                    f" manifest says {region.index_size}"
                )
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{where(name, region.name)}: index file missing") from None
        except OSError as exc:
            raise ImageError(f"{where(name, region.name)}: cannot read ({exc.strerror})") from None
        found = xxhash.xxh3_128_hexdigest(data)
        if found != region.index_xxh3:
            raise ImageError(
                f"{where(name, region.name)}: index xxh3-128 is {found},"
                f" manifest says {region.index_xxh3} (the index is damaged)"
            )
        header = spec.parse_index_header(data, name)
        expected = (region.stats.records, region.size, self.manifest.image_id, region.name)
        if (header.records, header.region_size, header.image_id.hex(), header.region) != expected:
            raise ImageError(
                f"{where(name, region.name)}: index header (records, size, image, region) is"
                f" {header.records, header.region_size, header.image_id.hex(), header.region},"
                f" manifest says {expected}"
            )
        body = data[spec.INDEX_HEADER.size :]
        if len(body) != header.records * spec.RECORD.size:
            raise ImageError(f"{where(name, region.name)}: index holds {len(body)} record bytes")
        records = spec.parse_index(
            body,
            name,
            region.name,
            region_size=region.size,
            chunk_size=self.manifest.chunk_size,
            pack_sizes=pack_sizes,
        )
        _check_stats(records, region, name)
        return records

    # -- reading ---------------------------------------------------------------------------

    def region(self, name: str) -> RegionEntry:
        try:
            return self.manifest.region(name)
        except KeyError:
            known = ", ".join(r.name for r in self.regions) or "none"
            raise ImageError(f"{self.path}: no region {name!r} (regions: {known})") from None

    def records(self, name: str) -> Sequence[Record]:
        """The region's index records in offset order (ZERO/UNREADABLE ones included)."""
        self.region(name)
        return self._records[name]

    def read_at(
        self, name: str, offset: int, length: int, *, fail_unreadable: bool = False
    ) -> bytes:
        """``length`` bytes at ``offset`` in the region (fewer at its end, like pread). Bytes
        the source could not give (UNREADABLE records) read as zeros, or with
        ``fail_unreadable`` fail the read with EIO, as the source's own read did (browsing:
        a file they touch gives an I/O error rather than zeros that look like data)."""
        size = self.region(name).size
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset {offset} or length {length}")
        end = min(offset + length, size)
        with self._stats_lock:
            self.stats.reads += 1
        records, pieces, pos = self._records[name], list[Buffer](), offset
        i = max(bisect.bisect_right(self._offsets[name], offset) - 1, 0)
        while pos < end and i < len(records) and records[i].offset < end:
            rec = records[i]
            i += 1
            if rec.end <= pos:
                continue
            if rec.offset > pos:
                pieces.extend(_zero_pieces(rec.offset - pos))
                pos = rec.offset
            stop = min(rec.end, end)
            if rec.flags == spec.FLAG_UNREADABLE and fail_unreadable:
                raise OSError(
                    errno.EIO,
                    f"region {name}: bytes {rec.offset}-{rec.end} were unreadable on the source",
                )
            if rec.flags:
                pieces.extend(_zero_pieces(stop - pos))
            else:
                data = self._cached_frame(name, rec)
                pieces.append(memoryview(data)[pos - rec.offset : stop - rec.offset])
            pos = stop
        if pos < end:
            pieces.extend(_zero_pieces(end - pos))
        if len(pieces) == 1 and isinstance(pieces[0], memoryview):
            whole = pieces[0].obj
            if isinstance(whole, bytes) and len(whole) == len(pieces[0]):
                return whole  # exactly one decoded frame: no copy
        return b"".join(pieces)

    def iter_chunks(
        self, name: str, *, include_zeros: bool = False
    ) -> Iterator[tuple[int, Buffer]]:
        """(region offset, bytes) of every frame record in order, for restore.

        With ``include_zeros`` ZERO and UNREADABLE records are yielded too, as zero buffers of at
        most chunk_size bytes (restore must overwrite them on the target; free space it need not).
        """
        for rec in self.records(name):
            if not rec.flags:
                yield rec.offset, self._frame(name, rec)
            elif include_zeros:
                step = self.manifest.chunk_size
                for start in range(rec.offset, rec.end, step):
                    yield start, memoryview(zeros(step))[: min(step, rec.end - start)]

    def _cached_frame(self, name: str, rec: Record) -> Buffer:
        key = (rec.pack, rec.pack_offset)
        with self._cache_lock:
            data = self._cache.get(key)
            if data is not None:
                self._cache.move_to_end(key)
                self.stats.cache_hits += 1
                return data
        data = self._frame(name, rec)
        with self._cache_lock:
            self._cache[key] = data
            while len(self._cache) > self.cache_frames:
                self._cache.popitem(last=False)
        return data

    def read_payload(self, name: str, rec: Record) -> bytes:
        """The stored payload of the frame ``rec`` points at, as it is in the pack (not
        decoded), its frame header checked against the record: what multicast sends on. The
        receiver decodes it and checks the hash."""
        return self._read_frame(name, rec)[0][spec.FRAME_HEADER.size :]

    def _frame(self, name: str, rec: Record) -> Buffer:
        """Read, check and decode the frame ``rec`` points at; ImageError on any mismatch."""
        raw, at = self._read_frame(name, rec)
        return decode_frame(raw, rec, at)

    def _read_frame(self, name: str, rec: Record) -> tuple[bytes, str]:
        """The frame (header + payload) ``rec`` points at, its header checked, and where it is
        (for messages)."""
        at = frame_at(self.pack_path(rec.pack), name, rec)
        try:
            raw = self._packs.pread(
                rec.pack, spec.FRAME_HEADER.size + rec.stored_length, rec.pack_offset
            )
        except OSError as exc:
            raise ImageError(f"{at}: read failed ({exc.strerror or exc})") from None
        with self._stats_lock:
            self.stats.frames_decoded += 1
            self.stats.stored_bytes_read += len(raw)
            self.stats.raw_bytes_decoded += rec.length
        check_frame(raw, rec, at)
        return raw, at

    def pack_path(self, number: int) -> str:
        """The file of pack ``number``."""
        return str(self._packs.paths[number])

    # -- verify ----------------------------------------------------------------------------

    def verify(
        self, progress: Callable[[int, int], None] | None = None, *, workers: int | None = None
    ) -> VerifyReport:
        """Decode every frame once and check it; report every problem found. Frames are taken
        in pack order, read sequentially and decoded on ``workers`` threads (default: every
        core; imaging/frame_stream.py); the decoded-frame cache is not used."""
        report = VerifyReport()
        users: dict[tuple[int, int], list[tuple[str, Record]]] = collections.defaultdict(list)
        for region in self.regions:
            for rec in self._records[region.name]:
                if not rec.flags:
                    users[(rec.pack, rec.pack_offset)].append((region.name, rec))
        keys = sorted(users)
        total = sum(spec.FRAME_HEADER.size + users[key][0][1].stored_length for key in keys)
        done = 0
        paths = [self.pack_path(n) for n in range(len(self.manifest.packs))]
        with FrameStream(paths, [users[key][0] for key in keys], workers=workers) as stream:
            for key, decoded in zip(keys, stream, strict=True):
                first_name, first = users[key][0]
                file = self.pack_path(first.pack)
                damage = None
                try:
                    report.raw_bytes += len(decoded.result())
                except ImageError as exc:
                    damage = str(exc)
                    report.problems.append(Problem(file, first_name, first.offset, damage))
                for name, rec in users[key][1:]:
                    if damage is not None:
                        why = f"uses the damaged frame of region {first_name} offset {first.offset}"
                    elif rec[1:] != first[1:]:
                        why = f"shares a frame with region {first_name} offset {first.offset}"
                        why += " but their records differ"
                    else:
                        continue
                    text = f"{where(file, name, rec.offset)}: {why} (pack offset {rec.pack_offset})"
                    report.problems.append(Problem(file, name, rec.offset, text))
                report.frames += 1
                done += spec.FRAME_HEADER.size + first.stored_length
                report.stored_bytes = done
                if progress is not None:
                    progress(done, total)
        self._check_tiling(users, report)
        return report

    def _check_tiling(
        self, users: dict[tuple[int, int], list[tuple[str, Record]]], report: VerifyReport
    ) -> None:
        """Frames must tile each pack exactly: no gap, no overlap, the manifest's frame count."""
        by_pack: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
        for (pack, pack_offset), refs in users.items():
            by_pack[pack].append((pack_offset, spec.FRAME_HEADER.size + refs[0][1].stored_length))
        for number, entry in enumerate(self.manifest.packs):
            file = str(self._packs.paths[number])
            frames = sorted(by_pack.get(number, []))
            pos = spec.PACK_HEADER.size
            superseded = 0
            for start, size in [*frames, (entry.size, 0)]:
                if start > pos and self.manifest.revision:
                    # An edited image: frames that an index revision replaced stay in their
                    # pack (docs/format.md §11); they must still tile it, header by header.
                    walked, pos = self._walk_superseded(number, pos, start, report)
                    superseded += walked
                if start == entry.size and size == 0:
                    break
                if start != pos:
                    what = "not referenced by any index" if start > pos else "overlap"
                    report.problems.append(
                        Problem(file, None, None, f"{file}: pack offset {pos} to {start}: {what}")
                    )
                pos = max(pos, start + size)
            if pos != entry.size or len(frames) + superseded != entry.frames:
                report.problems.append(
                    Problem(
                        file,
                        None,
                        None,
                        f"{file}: indexes reference {len(frames)} frames ending at {pos};"
                        f" the manifest says {entry.frames} frames in {entry.size} bytes",
                    )
                )

    def _walk_superseded(
        self, number: int, pos: int, stop: int, report: VerifyReport
    ) -> tuple[int, int]:
        """Step over frames no index uses any more, from ``pos`` to ``stop`` of pack ``number``;
        returns (frames walked, where the walk ended). Their payloads are not decoded."""
        file = str(self._packs.paths[number])
        walked = 0
        while pos < stop:
            at = f"{file}: superseded frame at pack offset {pos}"
            try:
                head = spec.parse_frame_header(
                    self._packs.pread(number, spec.FRAME_HEADER.size, pos), at
                )
            except (ImageError, OSError) as exc:
                report.problems.append(Problem(file, None, None, str(exc)))
                return walked, stop
            pos += spec.FRAME_HEADER.size + head.stored_length
            walked += 1
        return walked, pos

    def close(self) -> None:
        self._packs.close()
        with self._cache_lock:
            self._cache.clear()

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _zero_pieces(length: int) -> Iterator[memoryview]:
    block = memoryview(zeros(ZERO_PIECE))
    for start in range(0, length, ZERO_PIECE):
        yield block[: min(ZERO_PIECE, length - start)]


def _check_stats(records: list[Record], region: RegionEntry, file: str) -> None:
    """The manifest's per-region counters must agree with the index (a cheap cross-check)."""
    found = {"raw_bytes": 0, "zero_bytes": 0, "unreadable_bytes": 0}
    for rec in records:
        kind = {0: "raw_bytes", spec.FLAG_ZERO: "zero_bytes"}.get(rec.flags, "unreadable_bytes")
        found[kind] += rec.length
    stated = {key: getattr(region.stats, key) for key in found}
    if found != stated:
        raise ImageError(
            f"{where(file, region.name)}: index covers {found}, manifest says {stated}"
        )


def _load_manifest(path: Path) -> Manifest:
    manifest_path = path / spec.MANIFEST_NAME
    if not path.is_dir():
        raise ImageError(f"{path}: not an image directory")
    try:
        with manifest_path.open("rb") as f:
            raw = f.read(MAX_MANIFEST + 1)
    except FileNotFoundError:
        if (path / spec.PACKS_DIR).exists() or (path / spec.INDEX_DIR).exists():
            raise IncompleteImageError(
                f"{path}: incomplete image: no manifest.json (the save did not finish)"
            ) from None
        raise ImageError(f"{path}: not a clonebay image: no manifest.json") from None
    except OSError as exc:
        raise ImageError(f"{manifest_path}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_MANIFEST:
        raise ImageError(f"{manifest_path}: larger than {MAX_MANIFEST} bytes; not a manifest")
    return parse(raw, str(manifest_path))
