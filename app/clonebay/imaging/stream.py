"""Byte layouts of the single-stream form of an image (docs/format.md §10), with pure parsers.

A stream carries the same frames as an image directory in one byte stream that is written once
and read once, front to back, with no seeking: a pipe, ssh, a tape, a socket. It opens with a
stream header and a MANIFEST record (everything known before copying), carries one record per
index record (FRAME, ZERO, UNREADABLE, or REF to an identical earlier FRAME), and closes with one
INDEX record per region and an END record holding the final manifest. Every record header has a
CRC-32; FRAME bodies carry the xxh3-128 of their raw bytes; MANIFEST, INDEX and END bodies end
with the xxh3-128 of the rest of the body. A stream that stops before END is incomplete.

This module only declares layouts and parses bytes (no I/O): ``stream_write.StreamWriter``
writes streams, ``stream_read.StreamReader`` reads and checks them, ``stream_convert`` turns a
stream into a directory image and back without re-encoding a single frame.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

import xxhash

from clonebay.imaging.spec import FORMAT_VERSION, ImageError, NewerFormatError

# Stream header, offset 0: magic, format version, header size, flags (0 in v1), image id.
STREAM_HEADER = struct.Struct("<8sHHI16s")
STREAM_MAGIC = b"CBSTRM\r\n"  # \r\n: a text-mode copy that mangles line ends is caught at once

# Record header, before every record body: magic, type, flags (0 in v1), region (position in
# the manifest's regions), region offset, length (bytes of the region covered), body length,
# CRC-32 (zlib) of the 28 bytes before it.
RECORD_HEADER = struct.Struct("<4sBBHQQII")
RECORD_MAGIC = b"CBSR"
CRC_COVERS = RECORD_HEADER.size - 4

# REF body: the region and offset of the earlier FRAME whose bytes this chunk repeats, and
# their xxh3-128 (which the receiver checks against that FRAME).
REF_BODY = struct.Struct("<HQ16s")
BODY_HASH = 16  # MANIFEST, INDEX and END bodies end with the xxh3-128 of the bytes before it

REC_MANIFEST = 1
REC_FRAME = 2
REC_ZERO = 3
REC_UNREADABLE = 4
REC_REF = 5
REC_INDEX = 6
REC_END = 7
RECORD_NAMES = {
    REC_MANIFEST: "MANIFEST", REC_FRAME: "FRAME", REC_ZERO: "ZERO",
    REC_UNREADABLE: "UNREADABLE", REC_REF: "REF", REC_INDEX: "INDEX", REC_END: "END",
}  # fmt: skip
DATA_RECORDS = (REC_FRAME, REC_ZERO, REC_UNREADABLE, REC_REF)

STREAM_PACK = 0xFFFF_FFFF  # the `pack` of an INDEX record that points at a FRAME in the stream
MAX_REGIONS = 0xFFFF  # the region field is a u16
MAX_MANIFEST_BODY = (64 << 20) + BODY_HASH  # as a directory's manifest.json, plus the hash


class StreamHeader(NamedTuple):
    image_id: bytes


class RecordHeader(NamedTuple):
    kind: int
    region: int
    offset: int
    length: int
    body_length: int

    @property
    def name(self) -> str:
        return RECORD_NAMES.get(self.kind, f"type {self.kind}")


class RefBody(NamedTuple):
    region: int
    offset: int
    digest: bytes


def pack_stream_header(image_id: bytes) -> bytes:
    return STREAM_HEADER.pack(STREAM_MAGIC, FORMAT_VERSION, STREAM_HEADER.size, 0, image_id)


def parse_stream_header(raw: bytes, name: str) -> StreamHeader:
    if len(raw) < STREAM_HEADER.size:
        raise ImageError(
            f"{name}: stream header truncated ({len(raw)} of {STREAM_HEADER.size} bytes):"
            " the stream is empty or was cut at its start"
        )
    magic, version, size, flags, image_id = STREAM_HEADER.unpack_from(raw)
    if magic != STREAM_MAGIC:
        raise ImageError(f"{name}: not a clonebay stream (magic {magic!r})")
    if version > FORMAT_VERSION:
        raise NewerFormatError(
            f"{name}: made by a newer clonebay (stream format {version});"
            f" this one reads up to {FORMAT_VERSION}"
        )
    if (version, size, flags) != (FORMAT_VERSION, STREAM_HEADER.size, 0):
        raise ImageError(
            f"{name}: stream header version {version}, size {size}, flags {flags:#x}"
            " are not those of format 1"
        )
    return StreamHeader(image_id)


def pack_record_header(kind: int, region: int, offset: int, length: int, body: int) -> bytes:
    head = RECORD_HEADER.pack(RECORD_MAGIC, kind, 0, region, offset, length, body, 0)
    return head[:CRC_COVERS] + struct.pack("<I", zlib.crc32(head[:CRC_COVERS]))


def parse_record_header(raw: bytes, at: str) -> RecordHeader:
    """Check magic, CRC, type and flags of one record header; ``at`` says where it is."""
    if len(raw) < RECORD_HEADER.size:
        raise ImageError(f"{at}: record header truncated")
    magic, kind, flags, region, offset, length, body, crc = RECORD_HEADER.unpack_from(raw)
    if magic != RECORD_MAGIC:
        raise ImageError(f"{at}: no record magic (expected {RECORD_MAGIC!r}, found {magic!r})")
    found = zlib.crc32(raw[:CRC_COVERS])
    if found != crc:
        raise ImageError(
            f"{at}: record header CRC is {found:#010x}, the header says {crc:#010x}"
            " (the stream is damaged)"
        )
    if kind not in RECORD_NAMES:
        raise ImageError(f"{at}: record type {kind} unknown (made by a newer clonebay?)")
    if flags:
        raise ImageError(f"{at}: record flags {flags:#x} (expected 0)")
    return RecordHeader(kind, region, offset, length, body)


def pack_ref_body(region: int, offset: int, digest: bytes) -> bytes:
    return REF_BODY.pack(region, offset, digest)


def parse_ref_body(raw: bytes, at: str) -> RefBody:
    if len(raw) != REF_BODY.size:
        raise ImageError(f"{at}: REF body of {len(raw)} bytes (expected {REF_BODY.size})")
    return RefBody(*REF_BODY.unpack(raw))


def seal(body: bytes) -> bytes:
    """A MANIFEST, INDEX or END body: the bytes, then their xxh3-128."""
    return body + xxhash.xxh3_128_digest(body)


def unseal(raw: bytes, at: str) -> bytes:
    """The bytes of a sealed body, after checking its trailing xxh3-128."""
    if len(raw) < BODY_HASH:
        raise ImageError(f"{at}: body of {len(raw)} bytes has no room for its xxh3-128")
    body, stated = raw[:-BODY_HASH], raw[-BODY_HASH:]
    found = xxhash.xxh3_128_digest(body)
    if found != stated:
        raise ImageError(
            f"{at}: body xxh3-128 is {found.hex()}, the record says {stated.hex()}"
            " (the stream is damaged)"
        )
    return body
