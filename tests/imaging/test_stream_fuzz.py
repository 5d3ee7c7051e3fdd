"""Mutated streams: whatever is flipped, cut, dropped, repeated or inserted, the reader either
raises an InputError (ImageError) or yields exactly the original data — never anything else, and
it always stops."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clonebay.errors import InputError
from tests.imaging.test_stream import Script, make_script, replay, write_stream


class Sample:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.stream = write_stream(script)

    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"<stream of {len(self.stream)} bytes>"


@pytest.fixture(scope="module")
def small() -> Sample:
    return Sample(make_script(seed=3, regions=3))


def mutate(data: bytes, draw: Callable[[st.SearchStrategy[Any]], Any]) -> bytes:
    kind = draw(st.sampled_from(["flip", "byte", "cut", "drop", "repeat", "insert"]))
    if not data:
        return bytes(draw(st.binary(max_size=64)))
    pos = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        out = bytearray(data)
        out[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if kind == "byte":
        out = bytearray(data)
        out[pos] = draw(st.integers(0, 255).filter(lambda b: b != data[pos]))
        return bytes(out)
    if kind == "cut":
        return data[:pos]
    end = draw(st.integers(pos, min(len(data), pos + 200)))
    if kind == "drop":
        return data[:pos] + data[end:]
    if kind == "repeat":
        return data[:end] + data[pos:end] + data[end:]
    inserted: bytes = draw(st.binary(min_size=1, max_size=64))
    return data[:pos] + inserted + data[pos:]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutations_give_an_error_or_the_original_data(small: Sample, data: st.DataObject) -> None:
    bad = small.stream
    for _ in range(data.draw(st.integers(1, 3))):
        bad = mutate(bad, data.draw)
    try:
        regions, _ = replay(bad)
    except InputError:
        return
    assert regions == small.script.truth


@pytest.mark.parametrize("seed", range(3))
def test_every_single_bit_of_the_headers_matters(small: Sample, seed: int) -> None:
    """Every bit of the stream header and the first record headers is checked."""
    good = small.stream
    for pos in range(seed * 32, seed * 32 + 32):
        for bit in range(8):
            bad = bytearray(good)
            bad[pos] ^= 1 << bit
            with pytest.raises(InputError):
                replay(bytes(bad))
