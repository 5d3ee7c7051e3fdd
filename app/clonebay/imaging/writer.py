"""ImageWriter: regions of chunks -> frames in packs + one index per region + manifest.json.

The writer is single-threaded and does all the file I/O of a save: frames are appended to the
current pack (a new pack starts when the next frame would pass ``pack_limit``), each region's
index is written when the region ends, and ``finish`` writes manifest.json last, by atomic
rename after every pack and index is fsynced, so a crash or ``abort`` leaves a directory that
readers report as incomplete rather than an image that looks whole.

Chunks arrive in ascending region offset, either raw (``add_chunk``: hashed and compressed
here) or already encoded by pipeline workers (``add_encoded`` with the result of
``codec.encode_chunk``). Zero chunks never reach a pack: they become ZERO records, merged into
runs. A chunk whose xxh3-128 and length match an earlier frame is stored once; the match is
confirmed by comparing the stored payloads, so a hash collision costs a second frame, never
wrong data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import xxhash

import clonebay
from clonebay.errors import DeviceError, SafetyError, UsageError
from clonebay.imaging import spec
from clonebay.imaging.codec import Buffer, EncodedChunk, codec_id, encode_chunk
from clonebay.imaging.manifest import (
    Counters,
    Manifest,
    PackEntry,
    RegionEntry,
    UnreadableRange,
    to_json,
)

MAX_RUN = 1 << 31  # zero/unreadable records are merged into runs of at most 2 GiB


class _Region:
    """The region being written: its metadata, records so far and a pending zero run."""

    def __init__(self, entry: RegionEntry) -> None:
        self.entry = entry
        self.name = entry.name
        self.size = entry.size
        self.records = bytearray()
        self.stats = Counters()
        self.next_offset = 0  # chunks must not start before this
        self.run: tuple[int, int, int] | None = None  # (flags, start, length) not yet recorded

    def take(self, offset: int, length: int) -> None:
        if offset < self.next_offset or length <= 0 or offset + length > self.size:
            raise ValueError(
                f"region {self.name}: chunk [{offset}, +{length}) is out of order, empty or past"
                f" the region size {self.size} (next offset {self.next_offset})"
            )
        self.next_offset = offset + length

    def append(self, rec: spec.Record) -> None:
        self.records += spec.pack_record(rec)
        self.stats.records += 1


class ImageWriter:
    """Write one image directory; use as a context manager (an exception aborts)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_size: int = spec.DEFAULT_CHUNK_SIZE,
        pack_limit: int = spec.DEFAULT_PACK_LIMIT,
        codec: str = "lz4",
        overwrite: bool = False,
        dedup: bool = True,
    ) -> None:
        if not spec.MIN_CHUNK_SIZE <= chunk_size <= spec.MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size {chunk_size} outside [{spec.MIN_CHUNK_SIZE}, 64 MiB]")
        smallest = spec.PACK_HEADER.size + spec.FRAME_HEADER.size + chunk_size
        if not smallest <= pack_limit <= spec.MAX_PACK_SIZE:
            raise ValueError(f"pack_limit {pack_limit} outside [{smallest}, 4 GiB - 1]")
        self.path = Path(path)
        self.chunk_size = chunk_size
        self.pack_limit = pack_limit
        self.codec = codec
        self._codec_id = codec_id(codec)
        self._dedup_on = dedup
        self._image_id = os.urandom(16)
        self._region: _Region | None = None
        self._regions: list[RegionEntry] = []
        self._unreadable: list[UnreadableRange] = []
        self._packs: list[PackEntry] = []
        self._pack_fd: int | None = None
        self._pack_pos = 0
        self._pack_frames = 0
        self._read_fds: dict[int, int] = {}
        self._dedup: dict[tuple[bytes, int], tuple[int, int, int, int]] = {}
        self._done = False
        try:
            _prepare_directory(self.path, overwrite)
        except OSError as exc:
            raise DeviceError(f"{self.path}: {exc.strerror or exc}") from exc

    # -- regions ---------------------------------------------------------------------------

    def begin_region(
        self,
        name: str,
        kind: str,
        disk_offset: int,
        size: int,
        *,
        copy: str = "raw",
        fstype: str = "",
        label: str = "",
        uuid: str = "",
        state: str = "",
        used_bytes: int | None = None,
        reason: str = "",
        notes: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Start a region (a partition, a raw area such as the post-MBR gap, or a whole disk)."""
        self._check_open()
        if self._region is not None:
            raise ValueError(f"region {self._region.name} is still open: end_region() first")
        if not spec.valid_region_name(name):
            raise ValueError(f"region name {name!r}: use 1-64 of A-Z a-z 0-9 . _ - (no dot first)")
        if any(r.name == name for r in self._regions):
            raise ValueError(f"region {name} already written")
        if kind not in spec.REGION_KINDS or copy not in spec.COPY_METHODS:
            raise ValueError(f"region {name}: kind {kind!r} / copy {copy!r} unknown")
        if disk_offset < 0 or size < 0:
            raise ValueError(f"region {name}: negative offset or size")
        entry = RegionEntry(
            name=name, kind=kind, disk_offset=disk_offset, size=size, copy=copy,
            index_file=spec.index_name(name), index_size=0, index_xxh3="", stats=Counters(),
            fstype=fstype, label=label, uuid=uuid, state=state, reason=reason, notes=tuple(notes),
            used_bytes=size if used_bytes is None else used_bytes, extra=dict(extra or {}),
        )  # fmt: skip
        self._region = _Region(entry)

    def add_chunk(self, offset: int, data: Buffer) -> None:
        """Add raw bytes at ``offset`` in the open region; longer data is split into chunks."""
        view = memoryview(data).cast("B")
        for start in range(0, len(view), self.chunk_size):
            piece = view[start : start + self.chunk_size]
            self.add_encoded(offset + start, len(piece), encode_chunk(piece, self._codec_id))

    def add_encoded(self, offset: int, raw_len: int, chunk: EncodedChunk) -> None:
        """Add one chunk of ``raw_len`` bytes at ``offset``, as ``codec.encode_chunk`` made it.

        The payload is written (or compared) before this returns and not kept: its buffer may be
        reused at once.
        """
        region = self._open_region()
        codec, payload, digest, is_zero = chunk
        if is_zero:
            self.add_zero(offset, raw_len)
            return
        if raw_len > self.chunk_size:
            raise ValueError(f"chunk of {raw_len} bytes is larger than chunk_size")
        stored = len(payload)
        if codec not in spec.CODEC_NAMES or len(digest) != 16 or stored > raw_len:
            raise ValueError(f"bad encoded chunk: codec {codec}, {stored}/{raw_len} bytes")
        if codec == spec.CODEC_STORED and stored != raw_len:
            raise ValueError("a stored chunk's payload must be its raw bytes")
        region.take(offset, raw_len)
        self._flush_run(region)
        key = (digest, raw_len)
        known = self._dedup.get(key)
        if known is not None and self._same_payload(known, codec, payload):
            pack, pack_offset = known[0], known[1]
            region.stats.dedup_bytes += raw_len
        else:
            pack, pack_offset = self._write_frame(codec, raw_len, payload, digest)
            region.stats.frames += 1
            region.stats.stored_bytes += spec.FRAME_HEADER.size + stored
            if self._dedup_on and known is None:
                self._dedup[key] = (pack, pack_offset, stored, codec)
        region.stats.raw_bytes += raw_len
        region.append(spec.Record(offset, raw_len, pack, pack_offset, stored, codec, 0, digest))

    def add_zero(self, offset: int, length: int) -> None:
        """Record that ``length`` bytes at ``offset`` are zero (copied, but nothing stored)."""
        self._add_run(spec.FLAG_ZERO, offset, length)

    def add_unreadable(self, offset: int, length: int) -> None:
        """Record bytes the source could not deliver: they read as zeros and are listed."""
        self._add_run(spec.FLAG_UNREADABLE, offset, length)

    def end_region(self) -> RegionEntry:
        """Write the open region's index file and return its manifest entry."""
        region = self._open_region()
        self._flush_run(region)
        header = spec.pack_index_header(
            region.stats.records, region.size, self._image_id, region.name
        )
        data = header + region.records
        _write_new_file(self.path / spec.INDEX_DIR / region.entry.index_file, [data])
        entry = dataclasses.replace(
            region.entry,
            index_size=len(data),
            index_xxh3=xxhash.xxh3_128_hexdigest(data),
            stats=region.stats,
        )
        self._regions.append(entry)
        self._region = None
        return entry

    # -- finishing -------------------------------------------------------------------------

    def finish(
        self,
        *,
        source: Mapping[str, Any] | None = None,
        table: Mapping[str, Any] | None = None,
        warnings: Sequence[str] = (),
    ) -> Manifest:
        """Close the last pack, then write manifest.json atomically: the image is complete."""
        self._check_open()
        if self._region is not None:
            raise ValueError(f"region {self._region.name} is still open: end_region() first")
        self._close_pack()
        totals = Counters()
        for entry in self._regions:
            totals.add(entry.stats)
        manifest = Manifest(
            tool=f"clonebay {clonebay.__version__}",
            created=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            image_id=self._image_id.hex(),
            chunk_size=self.chunk_size,
            pack_limit=self.pack_limit,
            codec=self.codec,
            regions=tuple(self._regions),
            packs=tuple(self._packs),
            totals=totals,
            source=dict(source or {}),
            table=dict(table or {}),
            warnings=tuple(warnings),
            unreadable=tuple(self._unreadable),
        )
        text = to_json(manifest)  # raises on data JSON cannot carry, before anything is written
        for sub in (spec.PACKS_DIR, spec.INDEX_DIR):
            _fsync_dir(self.path / sub)
        tmp = self.path / (spec.MANIFEST_NAME + ".tmp")
        _write_new_file(tmp, [text], exclusive=False)
        _os_call(tmp, os.replace, tmp, self.path / spec.MANIFEST_NAME)
        _fsync_dir(self.path)
        self._release()
        return manifest

    def abort(self) -> None:
        """Stop writing and close files; the directory stays without manifest (incomplete)."""
        self._release()
        with contextlib.suppress(OSError):
            (self.path / (spec.MANIFEST_NAME + ".tmp")).unlink(missing_ok=True)

    def __enter__(self) -> ImageWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None or not self._done:
            self.abort()

    # -- internals -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._done:
            raise ValueError(f"image writer for {self.path} is already finished or aborted")

    def _open_region(self) -> _Region:
        self._check_open()
        if self._region is None:
            raise ValueError("no open region: begin_region() first")
        return self._region

    def _add_run(self, flags: int, offset: int, length: int) -> None:
        region = self._open_region()
        region.take(offset, length)
        if flags == spec.FLAG_ZERO:
            region.stats.zero_bytes += length
        else:
            region.stats.unreadable_bytes += length
            last = self._unreadable[-1] if self._unreadable else None
            if last and last.region == region.name and last.offset + last.length == offset:
                self._unreadable[-1] = UnreadableRange(
                    region.name, last.offset, last.length + length
                )
            else:
                self._unreadable.append(UnreadableRange(region.name, offset, length))
        run = region.run
        if run and run[0] == flags and run[1] + run[2] == offset and run[2] + length <= MAX_RUN:
            region.run = (flags, run[1], run[2] + length)
            return
        self._flush_run(region)
        while length > MAX_RUN:
            region.append(spec.Record(offset, MAX_RUN, 0, 0, 0, 0, flags, spec.NO_DIGEST))
            offset, length = offset + MAX_RUN, length - MAX_RUN
        region.run = (flags, offset, length)

    def _flush_run(self, region: _Region) -> None:
        if region.run is not None:
            flags, start, length = region.run
            region.append(spec.Record(start, length, 0, 0, 0, 0, flags, spec.NO_DIGEST))
            region.run = None

    def _write_frame(
        self, codec: int, raw_len: int, payload: Buffer, digest: bytes
    ) -> tuple[int, int]:
        size = spec.FRAME_HEADER.size + len(payload)
        if self._pack_fd is None or self._pack_pos + size > self.pack_limit:
            self._next_pack()
        assert self._pack_fd is not None
        number, offset = len(self._packs), self._pack_pos
        header = spec.pack_frame_header(codec, raw_len, len(payload), digest)
        _write_all(self._pack_fd, [header, payload], self._pack_path(number))
        self._pack_pos += size
        self._pack_frames += 1
        return number, offset

    def _same_payload(self, known: tuple[int, int, int, int], codec: int, payload: Buffer) -> bool:
        pack, pack_offset, stored, known_codec = known
        if known_codec != codec or stored != len(payload):
            return False
        fd = self._read_fds.get(pack)
        path = self._pack_path(pack)
        if fd is None:
            fd = self._read_fds[pack] = _os_call(path, os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        found: bytes = _os_call(path, os.pread, fd, stored, pack_offset + spec.FRAME_HEADER.size)
        return found == (payload if isinstance(payload, bytes) else bytes(payload))

    def _pack_path(self, number: int) -> Path:
        return self.path / spec.PACKS_DIR / spec.pack_name(number)

    def _next_pack(self) -> None:
        self._close_pack()
        path = self._pack_path(len(self._packs))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        self._pack_fd = _os_call(path, os.open, path, flags, 0o644)
        _write_all(self._pack_fd, [spec.pack_pack_header(len(self._packs), self._image_id)], path)
        self._pack_pos = spec.PACK_HEADER.size
        self._pack_frames = 0

    def _close_pack(self) -> None:
        if self._pack_fd is None:
            return
        fd, self._pack_fd = self._pack_fd, None
        path = self._pack_path(len(self._packs))
        try:
            _os_call(path, os.fsync, fd)
        finally:
            os.close(fd)
        self._packs.append(PackEntry(path.name, self._pack_pos, self._pack_frames))

    def _release(self) -> None:
        self._done = True
        for fd in [self._pack_fd, *self._read_fds.values()]:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._pack_fd = None
        self._read_fds.clear()
        self._dedup.clear()


def _os_call(path: Path, func: Any, *args: Any) -> Any:
    """Run one os call; an OSError becomes a DeviceError naming the image file."""
    try:
        return func(*args)
    except OSError as exc:
        raise DeviceError(f"{path}: {exc.strerror or exc}") from exc


def _write_all(fd: int, parts: list[Buffer], path: Path) -> None:
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        written: int = _os_call(path, os.writev, fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def _write_new_file(path: Path, parts: list[Buffer], *, exclusive: bool = True) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd: int = _os_call(path, os.open, path, flags, 0o644)
    try:
        _write_all(fd, parts, path)
        _os_call(path, os.fsync, fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd: int = _os_call(path, os.open, path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _os_call(path, os.fsync, fd)
    finally:
        os.close(fd)


def _image_files(path: Path) -> Iterator[Path]:
    """Files an image directory may hold; ValueError names the first file that is not ours."""
    for entry in sorted(path.iterdir()):
        if entry.name in (spec.MANIFEST_NAME, spec.MANIFEST_NAME + ".tmp") and entry.is_file():
            yield entry
        elif entry.name in (spec.PACKS_DIR, spec.INDEX_DIR) and entry.is_dir():
            suffix = ".pack" if entry.name == spec.PACKS_DIR else ".idx"
            for child in sorted(entry.iterdir()):
                if not (child.is_file() and child.name.endswith(suffix)):
                    raise ValueError(str(child))
                yield child
        else:
            raise ValueError(str(entry))


def _prepare_directory(path: Path, overwrite: bool) -> None:
    """Make ``path`` an empty image directory; refuse to clobber anything but an old image."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} exists and is not a directory; an image is a directory")
    if path.exists() and any(path.iterdir()):
        try:
            files = list(_image_files(path))
        except ValueError as exc:
            raise SafetyError(
                f"{path} holds files that are not part of a clonebay image ({exc});"
                " choose a new or empty directory"
            ) from None
        if not overwrite:
            state = "an image" if (path / spec.MANIFEST_NAME).exists() else "an incomplete image"
            raise SafetyError(f"{path} already holds {state}; pass overwrite to replace it")
        # The manifest goes first (and durably): an interrupted overwrite leaves an incomplete
        # image, never an old manifest pointing at half-deleted packs.
        files.sort(key=lambda p: p.name != spec.MANIFEST_NAME)
        for i, file in enumerate(files):
            _os_call(file, file.unlink)
            if i == 0:
                _fsync_dir(path)
    for sub in ("", spec.PACKS_DIR, spec.INDEX_DIR):
        _os_call(path / sub, (path / sub).mkdir, 0o755, False, True)
