"""Chunk encoding: hash, zero detection, LZ4 compression, and the inverse with its checks.

``encode_chunk`` is a pure function so that a threaded pipeline can run it in worker threads
(lz4 and xxhash release the GIL) and hand the results, in order, to ``ImageWriter.add_encoded``.
Every chunk is hashed with xxh3-128 over its raw bytes. An all-zero chunk is recognised by its
digest (one 16-byte compare against the cached digest of that many zeros) and then confirmed
byte for byte, so a hash collision can never turn data into zeros. LZ4 output is kept only when
it saves at least 1/32 (~3 %) of the chunk: below that, decompressing costs more time on restore
than the bytes saved on the medium, and incompressible data (media, encrypted volumes) is stored
raw without the compressor's small expansion.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import lz4.block
import xxhash

from clonebay.imaging.spec import CODEC_IDS, CODEC_LZ4, CODEC_NAMES, CODEC_STORED

Buffer = bytes | bytearray | memoryview
MIN_SAVING_SHIFT = 5  # keep LZ4 output only when it is at most raw - raw/32 bytes long


class EncodedChunk(NamedTuple):
    """What a worker hands to the writer: ``add_encoded(offset, raw_len, encoded)``."""

    codec: int
    payload: Buffer  # the stored bytes (the input itself when codec is CODEC_STORED)
    digest: bytes  # xxh3-128 of the raw bytes, canonical (big-endian) form
    is_zero: bool  # all zero: no payload is stored at all


class DecodeError(ValueError):
    """A payload does not decode to what its frame header says (the caller adds file/offset)."""


def codec_id(name: str) -> int:
    """'lz4' -> 1, 'stored' -> 0; ValueError for anything else."""
    try:
        return CODEC_IDS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r} (known: {', '.join(CODEC_IDS)})") from None


def digest(data: Buffer) -> bytes:
    return xxhash.xxh3_128_digest(data)


@functools.lru_cache(maxsize=64)
def zero_digest(length: int) -> bytes:
    return xxhash.xxh3_128_digest(bytes(length))


@functools.lru_cache(maxsize=8)
def zeros(length: int) -> bytes:
    """A shared read-only buffer of zeros (slice it with memoryview, never copy it)."""
    return bytes(length)


def is_zero_chunk(data: Buffer, data_digest: bytes) -> bool:
    """True when ``data`` is all zero; ``data_digest`` is its xxh3-128 (already computed)."""
    n = len(data)
    if data_digest != zero_digest(n):
        return False
    # Exact confirmation; only all-zero chunks (or a collision) get here. bytes/bytearray
    # comparisons are a memcmp (~20 GB/s); memoryview == bytes goes item by item (~0.25 GB/s).
    raw = bytes(data) if isinstance(data, memoryview) else data
    return raw == zeros(n)


def encode_chunk(data: Buffer, codec: str | int = CODEC_LZ4) -> EncodedChunk:
    """Hash, detect zeros and compress one chunk; ``codec`` is a name or id (no I/O, no state)."""
    ident = codec_id(codec) if isinstance(codec, str) else codec
    if ident not in CODEC_NAMES:
        raise ValueError(f"unknown codec id {ident}")
    data_digest = xxhash.xxh3_128_digest(data)
    if is_zero_chunk(data, data_digest):
        return EncodedChunk(CODEC_STORED, b"", data_digest, True)
    if ident == CODEC_LZ4:
        raw_length = len(data)
        packed = lz4.block.compress(data, store_size=False)
        if len(packed) <= raw_length - (raw_length >> MIN_SAVING_SHIFT):
            return EncodedChunk(CODEC_LZ4, packed, data_digest, False)
    return EncodedChunk(CODEC_STORED, data, data_digest, False)


def decode_payload(codec: int, payload: Buffer, raw_length: int, expected: bytes) -> Buffer:
    """The raw bytes of a payload, checked against length and digest; raises DecodeError."""
    if codec == CODEC_STORED:
        data: Buffer = payload
    elif codec == CODEC_LZ4:
        try:
            data = lz4.block.decompress(payload, uncompressed_size=raw_length)
        except lz4.block.LZ4BlockError as exc:
            raise DecodeError(f"lz4 payload does not decode ({exc})") from None
    else:
        raise DecodeError(f"codec id {codec} unknown (made by a newer clonebay?)")
    if len(data) != raw_length:
        raise DecodeError(f"payload decodes to {len(data)} bytes, expected {raw_length}")
    found = xxhash.xxh3_128_digest(data)
    if found != expected:
        raise DecodeError(f"xxh3-128 of the raw bytes is {found.hex()}, expected {expected.hex()}")
    return data
