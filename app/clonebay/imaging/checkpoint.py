"""Save checkpoints: what an interrupted save had made durable, so ``save --resume`` goes on.

A save writes its manifest last, so until then a kill, a crash or a power cut leaves an image
directory that readers call incomplete. Every few seconds (and at each region's end) the writer
also makes its state durable, in this order:

1. the pack being written is flushed and fsync'ed up to its current length;
2. the open region's index records so far are appended to ``resume/REGION.records`` (fsync'ed);
3. ``resume/checkpoint.json`` is replaced atomically: the closed regions' entries (their index
   files are written and fsync'ed already), the packs closed so far, the open pack's length and
   frame count, the open region's counters, pending zero run and unreadable ranges, how many
   bytes of its records file count (with their xxh3-128), and the job's own record (which
   source, the fingerprint of what it reads, where the reading stands: engine/save.py).

The directory then holds more than the checkpoint says (frames and records written after it, an
index file of a region that ended after it): ``load`` reads the checkpoint and checks every
record it keeps against the packs' durable lengths; the writer (``ImageWriter.resume``) cuts the
rest away. A save resumed from here writes what the uninterrupted save would have written after
that point: the same frames in the same packs, the same records.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from clonebay.errors import UsageError
from clonebay.imaging import spec
from clonebay.imaging.imagedir import fsync_dir, opened, os_call, write_all, write_new_file
from clonebay.imaging.jsonfields import JsonObject
from clonebay.imaging.manifest import (
    Counters,
    PackEntry,
    RegionEntry,
    UnreadableRange,
    parse_counters,
    parse_pack,
    parse_region,
    parse_unreadable,
    region_json,
)

FOLDER = spec.RESUME_DIR  # inside the image directory; removed once the manifest is written
STATE = "checkpoint.json"
VERSION = 1
NO_INDEX = "0" * 32  # the open region's entry has no index file yet


@dataclass
class OpenRegionState:
    """The region a checkpoint caught open: its entry, counters, next free offset, pending
    zero/unreadable run, unreadable ranges, and its records so far."""

    entry: RegionEntry
    stats: Counters
    next_offset: int
    run: tuple[int, int, int] | None
    unreadable: list[UnreadableRange]
    records: bytes = b""


@dataclass
class Checkpoint:
    """What a save had made durable, and the job's own record of where it stood."""

    image_id: bytes
    chunk_size: int
    pack_limit: int
    codec: str
    regions: list[RegionEntry]  # closed, their index files written
    packs: list[PackEntry]  # closed
    unreadable: list[UnreadableRange]  # of the closed regions
    pack_length: int  # the open pack's durable bytes (0: none open)
    pack_frames: int
    open: OpenRegionState | None
    job: dict[str, Any] = field(default_factory=dict)


def exists(image: Path) -> bool:
    """Whether ``image`` holds a checkpoint (False too when it cannot be told: a store that
    went away answers every question with an error)."""
    try:
        return (image / FOLDER / STATE).is_file()
    except OSError:
        return False


def records_file(image: Path, region: str) -> Path:
    return image / FOLDER / f"{region}.records"


def append_records(image: Path, region: str, records: bytes | bytearray, start: int) -> None:
    """Make ``records[start:]`` durable in the region's records file (step 2 above)."""
    path = records_file(image, region)
    if not path.parent.is_dir():
        os_call(path.parent, path.parent.mkdir, 0o755)
        fsync_dir(image)
    with opened(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC) as fd:
        os_call(path, os.lseek, fd, start, os.SEEK_SET)
        write_all(fd, [memoryview(records)[start:]], path)
        os_call(path, os.fsync, fd)


def save(image: Path, point: Checkpoint, records_length: int, records_xxh3: str) -> None:
    """Replace the checkpoint file atomically (step 3 above)."""
    body: dict[str, Any] = {
        "version": VERSION,
        "image_id": point.image_id.hex(),
        "chunk_size": point.chunk_size,
        "pack_limit": point.pack_limit,
        "codec": point.codec,
        "regions": [region_json(r) for r in point.regions],
        "packs": [{"name": p.name, "size": p.size, "frames": p.frames} for p in point.packs],
        "unreadable": [_range_json(u) for u in point.unreadable],
        "pack_length": point.pack_length,
        "pack_frames": point.pack_frames,
        "job": point.job,
    }
    if point.open is not None:
        state = point.open
        body["open"] = {
            "entry": region_json(dataclasses.replace(state.entry, index_xxh3=NO_INDEX)),
            "stats": state.stats.as_dict(),
            "next_offset": state.next_offset,
            "run": list(state.run) if state.run else None,
            "unreadable": [_range_json(u) for u in state.unreadable],
            "records": {"length": records_length, "xxh3": records_xxh3},
        }  # fmt: skip
    folder = image / FOLDER
    tmp = folder / (STATE + ".tmp")
    write_new_file(tmp, [json.dumps(body, indent=1).encode()], exclusive=False)
    os_call(tmp, os.replace, tmp, folder / STATE)
    fsync_dir(folder)


def _range_json(u: UnreadableRange) -> dict[str, Any]:
    return {"region": u.region, "offset": u.offset, "length": u.length}


def load(image: Path) -> Checkpoint:
    """The checkpoint of the incomplete image ``image``, checked: ImageError names what is
    wrong; UsageError when there is none."""
    path = image / FOLDER / STATE
    if not path.is_file():
        raise UsageError(
            f"{image} has no checkpoint to resume from (it is not an interrupted save, or a"
            " save made by a clonebay without --resume): delete it and save again"
        )
    file = str(path)
    try:
        obj = JsonObject(json.loads(os_call(path, path.read_bytes)), "", file)
    except ValueError as exc:
        raise spec.ImageError(f"{file}: not JSON ({exc})") from None
    obj.integer("version", VERSION, VERSION)
    image_id = obj.text("image_id")
    if len(image_id) != 32:
        raise obj.fail("image_id", "must be 32 hex digits")
    point = Checkpoint(
        image_id=bytes.fromhex(image_id),
        chunk_size=obj.integer("chunk_size", spec.MIN_CHUNK_SIZE, spec.MAX_CHUNK_SIZE),
        pack_limit=obj.integer("pack_limit", 1, spec.MAX_PACK_SIZE),
        codec=obj.text("codec", tuple(spec.CODEC_IDS)),
        regions=[parse_region(f, 0) for f in obj.objects("regions")],
        packs=[parse_pack(f) for f in obj.objects("packs")],
        unreadable=[parse_unreadable(f) for f in obj.objects("unreadable")],
        pack_length=obj.integer("pack_length", 0, spec.MAX_PACK_SIZE),
        pack_frames=obj.integer("pack_frames"),
        open=None,
        job=obj.sub("job", {}).obj,
    )
    sizes = [p.size for p in point.packs] + [point.pack_length]
    for entry in point.regions:
        _check_index(image, point, entry, sizes)
    if obj.obj.get("open") is not None:
        point.open = _open_state(image, obj.sub("open"), point, sizes)
    return point


def _open_state(
    image: Path, obj: JsonObject, point: Checkpoint, sizes: list[int]
) -> OpenRegionState:
    entry = dataclasses.replace(parse_region(obj.sub("entry"), 0), index_xxh3="")
    run = obj.items("run") if obj.obj.get("run") is not None else None
    if run is not None and (len(run) != 3 or not all(type(v) is int and v >= 0 for v in run)):
        raise obj.fail("run", "must be [flags, start, length]")
    rec = obj.sub("records")
    length, digest = rec.integer("length"), rec.text("xxh3")
    path = records_file(image, entry.name)
    data = os_call(path, path.read_bytes)[:length] if length else b""
    if len(data) != length or xxhash.xxh3_128_hexdigest(data) != digest:
        raise spec.ImageError(
            f"{path}: the records the checkpoint counts ({length} bytes) are missing or differ"
            " from what was written: the image cannot be resumed; delete it and save again"
        )
    spec.parse_index(
        data, str(path), entry.name, region_size=entry.size, chunk_size=point.chunk_size,
        pack_sizes=sizes,
    )  # fmt: skip
    return OpenRegionState(
        entry=entry,
        stats=parse_counters(obj.sub("stats")),
        next_offset=obj.integer("next_offset", 0, entry.size),
        run=(run[0], run[1], run[2]) if run is not None else None,
        unreadable=[parse_unreadable(f) for f in obj.objects("unreadable")],
        records=data,
    )


def _check_index(image: Path, point: Checkpoint, entry: RegionEntry, sizes: list[int]) -> None:
    """A closed region's index file is whole (its hash) and points inside durable packs."""
    path = image / spec.INDEX_DIR / entry.index_file
    data = os_call(path, path.read_bytes)
    if len(data) != entry.index_size or xxhash.xxh3_128_hexdigest(data) != entry.index_xxh3:
        raise spec.ImageError(f"{path}: differs from what the checkpoint recorded")
    spec.parse_index(
        data[spec.INDEX_HEADER.size :], str(path), entry.name, region_size=entry.size,
        chunk_size=point.chunk_size, pack_sizes=sizes,
    )  # fmt: skip


def index_records(image: Path, entry: RegionEntry) -> bytes:
    """A closed region's records (its index file without the header)."""
    path = image / spec.INDEX_DIR / entry.index_file
    data: bytes = os_call(path, path.read_bytes)
    return data[spec.INDEX_HEADER.size :]


def discard(image: Path) -> None:
    """The save is complete: the checkpoint folder goes (its manifest is durable already)."""
    folder = image / FOLDER
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        os_call(child, child.unlink)
    os_call(folder, folder.rmdir)
    fsync_dir(image)
