"""Byte layouts, magics and version numbers of the clonebay image format v1 (docs/format.md).

An image is a directory: ``manifest.json`` (written last), ``packs/NNNNNN.pack`` (a pack header,
then frames: a frame header and a payload) and ``index/REGION.idx`` (an index header, then
fixed-width records sorted by region offset). Every layout is declared once here as a
little-endian ``struct`` with its fields named beside it; the parse functions are pure (bytes in,
named tuples out) and raise :class:`ImageError` naming the file, region and offset of anything
they do not accept. No I/O happens in this module.
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

from clonebay.errors import InputError

FORMAT_NAME = "clonebay-image"
FORMAT_VERSION = 1  # the newest version this code writes and reads (docs/format.md, Versioning)
HASH_NAME = "xxh3-128"
MANIFEST_NAME = "manifest.json"
PACKS_DIR = "packs"
INDEX_DIR = "index"
RESUME_DIR = "resume"  # an unfinished save's checkpoint (imaging/checkpoint.py)

MAX_PACK_SIZE = 0xFFFF_FFFF  # 4 GiB - 1: the largest file FAT32 can hold
DEFAULT_PACK_LIMIT = 1 << 30
DEFAULT_CHUNK_SIZE = 4 << 20
MIN_CHUNK_SIZE = 4 << 10
MAX_CHUNK_SIZE = 64 << 20  # bounds what a reader must hold in memory for one frame
MAX_RECORD_LENGTH = 0xFFFF_FFFF  # a record's length is a u32 (zero and unreadable runs)

# Pack header, offset 0 of every pack file: magic, format version, header size, pack number
# (its position in the manifest's "packs" list), image id (16 random bytes, also in the manifest).
PACK_HEADER = struct.Struct("<8sHHI16s")
PACK_MAGIC = b"CBPACK\r\n"  # \r\n: a text-mode copy that mangles line ends is caught at once

# Frame header, directly followed by the payload: magic, codec id, flags (0 in v1), reserved
# (0), raw length, stored (payload) length, xxh3-128 of the raw bytes (canonical big-endian).
FRAME_HEADER = struct.Struct("<4sBBHII16s")
FRAME_MAGIC = b"CBFR"

# Index header: magic, format version, header size, record size, flags (0 in v1), record count,
# region size, image id, region name (UTF-8, NUL padded), reserved (0).
INDEX_HEADER = struct.Struct("<8sHHHHQQ16s64s16s")
INDEX_MAGIC = b"CBINDX\r\n"
# Index record: region offset, length, pack number, pack offset (of the frame header), stored
# length, codec id, flags, reserved (0), xxh3-128 of the raw bytes.
RECORD = struct.Struct("<QIIQIBBH16s")

# Record flags. A record without flags points at a frame; ZERO and UNREADABLE records point at
# nothing (pack, pack offset, stored length, codec and digest are all 0) and read as zeros.
FLAG_ZERO = 0x01  # the source bytes were all zero: a restore writes (or discards) zeros
FLAG_UNREADABLE = 0x02  # the source could not be read here: a restore writes zeros, and says so
KNOWN_RECORD_FLAGS = (0, FLAG_ZERO, FLAG_UNREADABLE)
NO_DIGEST = bytes(16)

# Codec ids (one byte in frame headers and index records).
CODEC_STORED = 0
CODEC_LZ4 = 1  # LZ4 block format, no size prefix: the raw length is in the frame header
CODEC_NAMES = {CODEC_STORED: "stored", CODEC_LZ4: "lz4"}
CODEC_IDS = {name: ident for ident, name in CODEC_NAMES.items()}

REGION_KINDS = ("partition", "raw-area", "disk")
COPY_METHODS = ("native", "raw")
_REGION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PACK_NAME = re.compile(r"[0-9]{6,10}\.pack")


class ImageError(InputError):
    """An image is damaged, incomplete or not understood; the message names file, region, offset."""

    title = "Bad image"


class IncompleteImageError(ImageError):
    """The image directory has no manifest.json: its save never finished."""

    title = "Incomplete image"


class NewerFormatError(ImageError):
    """The image was written by a newer clonebay whose format this one cannot read."""

    title = "Image from a newer clonebay"


def where(file: str, region: str | None = None, offset: int | None = None) -> str:
    """'FILE, region R, offset N' — the prefix of every image error message."""
    text = file
    if region is not None:
        text += f", region {region}"
    if offset is not None:
        text += f", offset {offset}"
    return text


def valid_region_name(name: str) -> bool:
    """Region names become file names (index/NAME.idx): 1-64 of [A-Za-z0-9._-], no leading dot."""
    return _REGION_NAME.fullmatch(name) is not None


def valid_pack_name(name: str) -> bool:
    return _PACK_NAME.fullmatch(name) is not None


def pack_name(number: int) -> str:
    return f"{number:06d}.pack"


def index_name(region: str, revision: int = 0) -> str:
    """``REGION.idx`` as saved; ``REGION.rN.idx`` for the index an edit committed as revision N
    (docs/format.md §11): a new name, so the old index stays valid until the manifest switches."""
    return f"{region}.idx" if revision == 0 else f"{region}.r{revision}.idx"


class PackHeader(NamedTuple):
    number: int
    image_id: bytes


class FrameHeader(NamedTuple):
    codec: int
    flags: int
    raw_length: int
    stored_length: int
    digest: bytes


class IndexHeader(NamedTuple):
    records: int
    region_size: int
    image_id: bytes
    region: str


class Record(NamedTuple):
    offset: int
    length: int
    pack: int
    pack_offset: int
    stored_length: int
    codec: int
    flags: int
    digest: bytes

    @property
    def end(self) -> int:
        return self.offset + self.length


def pack_pack_header(number: int, image_id: bytes) -> bytes:
    return PACK_HEADER.pack(PACK_MAGIC, FORMAT_VERSION, PACK_HEADER.size, number, image_id)


def parse_pack_header(raw: bytes, file: str) -> PackHeader:
    if len(raw) < PACK_HEADER.size:
        raise ImageError(f"{where(file, None, 0)}: pack header truncated ({len(raw)} bytes)")
    magic, version, size, number, image_id = PACK_HEADER.unpack_from(raw)
    if magic != PACK_MAGIC:
        raise ImageError(f"{where(file, None, 0)}: not a clonebay pack (magic {magic!r})")
    if version > FORMAT_VERSION:
        raise NewerFormatError(f"{file}: pack format {version} is newer than {FORMAT_VERSION}")
    if version != FORMAT_VERSION or size != PACK_HEADER.size:
        raise ImageError(f"{where(file, None, 0)}: pack header version {version} size {size}")
    return PackHeader(number, image_id)


def pack_frame_header(codec: int, raw_length: int, stored_length: int, digest: bytes) -> bytes:
    return FRAME_HEADER.pack(FRAME_MAGIC, codec, 0, 0, raw_length, stored_length, digest)


def parse_frame_header(raw: bytes | memoryview, at: str) -> FrameHeader:
    """Parse a frame header; ``at`` says where it is (file, region, offset) for errors."""
    if len(raw) < FRAME_HEADER.size:
        raise ImageError(f"{at}: frame header truncated")
    magic, codec, flags, reserved, raw_length, stored_length, digest = FRAME_HEADER.unpack_from(raw)
    if magic != FRAME_MAGIC:
        raise ImageError(f"{at}: no frame magic (expected {FRAME_MAGIC!r}, found {magic!r})")
    if flags or reserved:
        raise ImageError(f"{at}: frame flags {flags:#x} reserved {reserved:#x} (expected 0)")
    return FrameHeader(codec, flags, raw_length, stored_length, digest)


def pack_index_header(count: int, region_size: int, image_id: bytes, region: str) -> bytes:
    name = region.encode()
    return INDEX_HEADER.pack(
        INDEX_MAGIC, FORMAT_VERSION, INDEX_HEADER.size, RECORD.size, 0, count, region_size,
        image_id, name, bytes(16),
    )  # fmt: skip


def parse_index_header(raw: bytes, file: str) -> IndexHeader:
    if len(raw) < INDEX_HEADER.size:
        raise ImageError(f"{where(file, None, 0)}: index header truncated ({len(raw)} bytes)")
    fields = INDEX_HEADER.unpack_from(raw)
    magic, version, header_size, record_size, flags, count, size, image_id, name, reserved = fields
    if magic != INDEX_MAGIC:
        raise ImageError(f"{where(file, None, 0)}: not a clonebay index (magic {magic!r})")
    if version > FORMAT_VERSION:
        raise NewerFormatError(f"{file}: index format {version} is newer than {FORMAT_VERSION}")
    if (version, header_size, record_size, flags, reserved) != (
        FORMAT_VERSION, INDEX_HEADER.size, RECORD.size, 0, bytes(16),
    ):  # fmt: skip
        raise ImageError(f"{where(file, None, 0)}: index header fields not those of format 1")
    try:
        region = name.rstrip(b"\0").decode()
    except UnicodeDecodeError:
        raise ImageError(f"{where(file, None, 0)}: region name is not UTF-8") from None
    return IndexHeader(count, size, image_id, region)


def pack_record(rec: Record) -> bytes:
    return RECORD.pack(*rec[:7], 0, rec.digest)


def check_record(rec: Record, reserved: int, file: str, region: str, chunk_size: int) -> None:
    """Check one record on its own (order and pack bounds are checked by the reader)."""
    at = where(file, region, rec.offset)
    if reserved or rec.flags not in KNOWN_RECORD_FLAGS:
        raise ImageError(f"{at}: record flags {rec.flags:#x} reserved {reserved:#x} unknown")
    if rec.length == 0:
        raise ImageError(f"{at}: record of length 0")
    if rec.flags:
        if (rec.pack, rec.pack_offset, rec.stored_length, rec.codec, rec.digest) != (
            0, 0, 0, 0, NO_DIGEST,
        ):  # fmt: skip
            raise ImageError(f"{at}: zero/unreadable record points at a frame")
        return
    if rec.codec not in CODEC_NAMES:
        raise ImageError(f"{at}: codec id {rec.codec} unknown (made by a newer clonebay?)")
    if rec.length > chunk_size:
        raise ImageError(f"{at}: chunk of {rec.length} bytes exceeds chunk size {chunk_size}")
    if rec.stored_length > rec.length or (
        rec.codec == CODEC_STORED and rec.stored_length != rec.length
    ):
        raise ImageError(
            f"{at}: stored length {rec.stored_length} impossible for raw length {rec.length}"
        )


def parse_index(
    data: bytes, file: str, region: str, *, region_size: int, chunk_size: int, pack_sizes: list[int]
) -> list[Record]:
    """Parse a whole index file body (after its header) into records, checking every one.

    Records must be sorted, must not overlap, must lie inside the region, and every frame they
    point at must lie inside its pack (``pack_sizes`` in manifest order).
    """
    if len(data) % RECORD.size:
        raise ImageError(f"{file}: index body of {len(data)} bytes is not whole records")
    records: list[Record] = []
    end = 0
    for (
        offset,
        length,
        pack,
        pack_offset,
        stored,
        codec,
        flags,
        reserved,
        digest,
    ) in RECORD.iter_unpack(data):
        rec = Record(offset, length, pack, pack_offset, stored, codec, flags, digest)
        check_record(rec, reserved, file, region, chunk_size)
        if rec.offset < end or rec.end > region_size:
            raise ImageError(
                f"{where(file, region, rec.offset)}: record [{rec.offset}, +{rec.length}) overlaps"
                f" the previous one (ending at {end}) or passes the region size {region_size}"
            )
        end = rec.end
        if not rec.flags:
            if rec.pack >= len(pack_sizes):
                raise ImageError(
                    f"{where(file, region, rec.offset)}: pack {rec.pack} does not exist"
                    f" (the manifest lists {len(pack_sizes)})"
                )
            frame_end = rec.pack_offset + FRAME_HEADER.size + rec.stored_length
            if rec.pack_offset < PACK_HEADER.size or frame_end > pack_sizes[rec.pack]:
                raise ImageError(
                    f"{where(file, region, rec.offset)}: frame at pack {pack_name(rec.pack)}"
                    f" offset {rec.pack_offset} (to {frame_end}) is outside the pack"
                    f" ({pack_sizes[rec.pack]} bytes)"
                )
        records.append(rec)
    return records
