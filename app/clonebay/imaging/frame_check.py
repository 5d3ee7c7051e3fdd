"""Checking a frame read from a pack against the index record that points at it.

Every path that reads frames of an image directory checks them here, so the checks of
docs/format.md §6 are written once: ImageReader's random reads and its verify, the restore's
sequential stream (imaging/frame_stream.py) and directory -> stream conversion. A frame is good
when enough bytes were read, its header has the frame magic and zero flags and reserved field,
its codec, raw length, stored length and xxh3-128 equal the record's, and its payload decodes to
exactly raw length bytes whose xxh3-128 is the record's. Anything else is an ImageError whose
message starts with ``frame_at``: the pack file, the region, the region offset and the frame's
pack offset.
"""

from __future__ import annotations

from clonebay.imaging import spec
from clonebay.imaging.codec import Buffer, DecodeError, decode_payload
from clonebay.imaging.spec import ImageError, Record, where


def frame_at(pack_file: str, region: str, rec: Record) -> str:
    """'PACK, region R, offset N: frame at pack offset P', the start of every frame error."""
    return f"{where(pack_file, region, rec.offset)}: frame at pack offset {rec.pack_offset}"


def check_frame(raw: Buffer, rec: Record, at: str) -> None:
    """``raw`` (frame header + payload, as read from the pack) must be the frame ``rec`` names."""
    want = spec.FRAME_HEADER.size + rec.stored_length
    if len(raw) < want:
        raise ImageError(f"{at}: pack truncated (needs {want} bytes, found {len(raw)})")
    header = spec.parse_frame_header(memoryview(raw), at)
    found = (header.codec, header.raw_length, header.stored_length, header.digest)
    expected = (rec.codec, rec.length, rec.stored_length, rec.digest)
    if found != expected:
        raise ImageError(
            f"{at}: frame header (codec, raw length, stored length, xxh3) does not match the"
            f" index: expected {_fields(expected)}, found {_fields(found)}"
        )


def decode_frame(raw: Buffer, rec: Record, at: str) -> Buffer:
    """The checked raw bytes of the frame ``raw``; a stored frame's are a view into ``raw``."""
    check_frame(raw, rec, at)
    start = spec.FRAME_HEADER.size
    payload = memoryview(raw)[start : start + rec.stored_length]
    try:
        return decode_payload(rec.codec, payload, rec.length, rec.digest)
    except DecodeError as exc:
        raise ImageError(f"{at}: {exc}") from None


def _fields(values: tuple[int, int, int, bytes]) -> str:
    codec, raw_length, stored_length, digest = values
    return f"({codec}, {raw_length}, {stored_length}, {digest.hex()})"
