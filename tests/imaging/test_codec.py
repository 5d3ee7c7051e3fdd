"""encode_chunk / decode_payload against lz4 and xxhash themselves as oracles."""

from __future__ import annotations

import os
import random

import lz4.block
import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from clonebay.imaging import codec, spec


def test_zero_chunk_is_recognised_exactly() -> None:
    enc = codec.encode_chunk(bytes(4096))
    assert enc.is_zero and enc.payload == b""
    assert enc.digest == xxhash.xxh3_128_digest(bytes(4096))
    for position in (0, 2048, 4095):
        data = bytearray(4096)
        data[position] = 1
        assert not codec.encode_chunk(memoryview(data)).is_zero


def test_zero_check_never_trusts_the_digest_alone() -> None:
    # A chunk whose claimed digest is that of zeros, but whose bytes are not zero.
    data = b"\x00" * 4095 + b"\x01"
    assert not codec.is_zero_chunk(data, codec.zero_digest(len(data)))


def test_incompressible_chunk_is_stored_raw() -> None:
    data = os.urandom(65536)
    enc = codec.encode_chunk(data)
    assert enc.codec == spec.CODEC_STORED
    assert bytes(enc.payload) == data


def test_compressible_chunk_is_lz4_block_without_size_prefix() -> None:
    data = b"clonebay " * 8000
    enc = codec.encode_chunk(data)
    assert enc.codec == spec.CODEC_LZ4
    assert lz4.block.decompress(enc.payload, uncompressed_size=len(data)) == data
    assert len(enc.payload) < len(data) // 10


@given(st.integers(1, 8192), st.integers(0, 8192), st.randoms(use_true_random=False))
def test_lz4_is_kept_only_when_it_saves_a_32nd(noise: int, zeros: int, rnd: random.Random) -> None:
    data = rnd.randbytes(noise) + bytes(zeros)
    enc = codec.encode_chunk(data)
    packed = lz4.block.compress(data, store_size=False)
    if enc.is_zero:
        assert not any(data)
    elif len(packed) <= len(data) - len(data) // 32:
        assert (enc.codec, enc.payload) == (spec.CODEC_LZ4, packed)
    else:
        assert (enc.codec, bytes(enc.payload)) == (spec.CODEC_STORED, data)
    if not enc.is_zero:
        decoded = codec.decode_payload(enc.codec, enc.payload, len(data), enc.digest)
        assert bytes(decoded) == data


def test_stored_codec_never_compresses() -> None:
    enc = codec.encode_chunk(b"a" * 4096, "stored")
    assert (enc.codec, bytes(enc.payload)) == (spec.CODEC_STORED, b"a" * 4096)


def test_decode_rejects_wrong_digest_length_and_garbage() -> None:
    data = b"abc" * 1000
    enc = codec.encode_chunk(data)
    with pytest.raises(codec.DecodeError, match="xxh3-128"):
        codec.decode_payload(enc.codec, enc.payload, len(data), bytes(16))
    with pytest.raises(codec.DecodeError, match="decodes to"):
        codec.decode_payload(enc.codec, enc.payload, len(data) + 1, enc.digest)
    with pytest.raises(codec.DecodeError, match="lz4"):
        codec.decode_payload(spec.CODEC_LZ4, b"\xff" * 40, len(data), enc.digest)
    with pytest.raises(codec.DecodeError, match="codec id 9"):
        codec.decode_payload(9, enc.payload, len(data), enc.digest)


def test_unknown_codec_names_are_refused() -> None:
    assert codec.codec_id("lz4") == spec.CODEC_LZ4
    with pytest.raises(ValueError, match="zstd"):
        codec.codec_id("zstd")
    with pytest.raises(ValueError, match="codec id"):
        codec.encode_chunk(b"x", 7)
