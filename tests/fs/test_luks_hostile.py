"""LUKS headers that are damaged, forged or of a kind not read here: each ends in a LuksError (or
a whole, still encrypted copy with the reason), quickly, never in a traceback or a hang.

The headers start as cryptsetup luksFormat writes them (LUKS2 and LUKS1, PBKDF2 1000 iterations);
a damaged copy is a flipped byte; a forged one has its JSON edited and both copies signed again
(tests/luks_volumes.py), so it passes the checksum and must be refused for what it says.
Volumes in a state not read here are made by cryptsetup itself where it can without
device-mapper: an aes-ctr cipher, a detached header, a reencryption initialised but not run.
dm-integrity cannot be formatted without device-mapper, so that segment is forged in the JSON.
"""

from __future__ import annotations

import copy
import json
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clonebay.errors import LuksError, LuksKeyError
from clonebay.fs.keyring import Keyring
from clonebay.fs.luks_header import LUKS1, LUKS1_SLOT, read_header
from clonebay.fs.luks_keys import unlock
from clonebay.fs.luks_view import readable
from clonebay.fs.probe import probe_volume
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import BytesSource
from tests.luks_volumes import (
    PASSPHRASE,
    format_header,
    json_of,
    run,
    secret_file,
    with_json,
    with_json_text,
)

MiB = 1 << 20
SIZE = 4 * MiB
# LUKS2 headers here keep their key slots in 512 KiB and their data from 1 MiB on (16 MiB by
# default): the fuzz tests copy the volume for every example.
SMALL = ("--luks2-keyslots-size", "512k", "--offset", "2048")
Edit = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return secret_file(tmp_path_factory.mktemp("luks-key"), PASSPHRASE.encode())


def formatted(folder: Path, key_file: Path, *extra: str, version: int = 2) -> bytes:
    image = folder / "volume.img"
    with open(image, "wb") as f:
        f.truncate(SIZE)
    format_header(image, key_file, *extra, version=version)
    return image.read_bytes()


@pytest.fixture(scope="module")
def luks2(tmp_path_factory: pytest.TempPathFactory, key_file: Path) -> bytes:
    return formatted(tmp_path_factory.mktemp("luks2"), key_file, *SMALL)


@pytest.fixture(scope="module")
def luks1(tmp_path_factory: pytest.TempPathFactory, key_file: Path) -> bytes:
    return formatted(tmp_path_factory.mktemp("luks1"), key_file, version=1)


def probe_with_key(data: bytes) -> Volume:
    """probe_volume with the right passphrase: must come back, whatever ``data`` says."""
    return probe_volume(BytesSource(data, "forged"), keys=Keyring(passwords=[PASSPHRASE]))


def assert_whole(volume: Volume, words: str) -> None:
    assert (volume.fstype, volume.copy, volume.state) == (
        "luks",
        CopyMethod.RAW,
        VolumeState.ENCRYPTED,
    )
    assert volume.used == (Extent(0, volume.size),)
    said = " ".join((volume.reason, *volume.notes))
    assert words in said, said
    assert PASSPHRASE not in said


def flipped(data: bytes, *offsets: int) -> bytes:
    out = bytearray(data)
    for offset in offsets:
        out[offset] ^= 0x20
    return bytes(out)


def test_a_damaged_primary_gives_way_to_the_secondary(luks2: bytes) -> None:
    hdr_size = struct.unpack_from(">Q", luks2, 8)[0]
    damaged = flipped(luks2, 4096 + 30)
    header = read_header(BytesSource(damaged))
    assert header.copy_note == (
        "LUKS2 secondary header used: primary header: sha256 checksum mismatch (header or JSON"
        " area damaged)"
    )
    good = read_header(BytesSource(luks2))
    assert (header.uuid, header.keyslots, header.segments) == (
        good.uuid,
        good.keyslots,
        good.segments,
    )
    secret = PASSPHRASE.encode()
    key = unlock(BytesSource(damaged), header, secret, "passphrase 1")
    assert key == unlock(BytesSource(luks2), good, secret, "passphrase 1")
    with pytest.raises(LuksError, match="no usable LUKS2 header copy: primary header: sha256"):
        read_header(BytesSource(flipped(damaged, hdr_size + 4096 + 30)))
    volume = probe_with_key(flipped(damaged, hdr_size + 4096 + 30))
    assert_whole(volume, "LUKS header not readable")


@pytest.mark.parametrize("length", [8, 600, 4096, 16 << 10, 40 << 10, 512 << 10, 1 * MiB])
def test_truncated_luks2(luks2: bytes, length: int) -> None:
    with pytest.raises(LuksError, match=r"past the end|no usable LUKS2 header"):
        read_header(BytesSource(luks2[:length]))
    assert_whole(probe_with_key(luks2[:length]), "LUKS header not readable")


@pytest.mark.parametrize("length", [8, 300, 592, 4096])
def test_truncated_luks1(luks1: bytes, length: int) -> None:
    with pytest.raises(LuksError, match="past the end"):
        read_header(BytesSource(luks1[:length]))
    assert_whole(probe_with_key(luks1[:length]), "LUKS header not readable")


def _set(path: str, value: object) -> Edit:
    """An edit that sets the JSON field at dotted ``path`` ("keyslots.0.area.offset")."""

    def edit(tree: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return edit


ARGON2 = {"type": "argon2id", "salt": "AAAAAAAAAAAAAAAAAAAAAA==", "cpus": 1}
FORGED_AT_READ = {
    "keyslot area outside the keyslots area": (
        _set("keyslots.0.area.offset", str(1 << 40)),
        "is not inside the keyslots area",
    ),
    "keyslots area past the end": (
        _set("config.keyslots_size", str(1 << 40)),
        f"past the end of the {SIZE}-byte volume",
    ),
    "data offset past the end": (
        _set("segments.0.offset", str(1 << 40)),
        "puts the data segment 0 at bytes 1099511627776",
    ),
    "json_size wrong": (_set("config.json_size", "4096"), "config.json_size 4096"),
    "key size not a number": (_set("keyslots.0.key_size", "many"), "'key_size' is missing"),
    "no segments": (lambda t: t.pop("segments"), "'segments' is missing or not a dict"),
    "unknown KDF": (_set("keyslots.0.kdf.type", "scrypt"), "KDF 'scrypt' is not supported"),
    "unicode digits": (_set("segments.0.offset", "²"), "'offset' is missing or not a number"),
}
FORGED_AT_OPEN = {
    "PBKDF2 iterations": (
        _set("keyslots.0.kdf.iterations", 1 << 40),
        "key slot 0: PBKDF2 with 1099511627776 iterations for a 64-byte key (the limit is"
        " 67108864 hash blocks)",
    ),
    "Argon2 memory": (
        _set("keyslots.0.kdf", {**ARGON2, "time": 4, "memory": 1 << 30}),
        "argon2id asks for 1073741824 KiB and 4 passes",
    ),
    "Argon2 passes": (
        _set("keyslots.0.kdf", {**ARGON2, "time": 1 << 31, "memory": 1 << 20}),
        "argon2id asks for 1048576 KiB and 2147483648 passes",
    ),
    "Argon2 lanes": (
        _set("keyslots.0.kdf", {**ARGON2, "time": 4, "memory": 32, "cpus": 0}),
        "is not a valid Argon2 setting",
    ),
    "digest iterations": (
        _set("digests.0.iterations", 1 << 40),
        "key slot 0's digest: PBKDF2 with 1099511627776 iterations",
    ),
    "integrity": (
        _set("segments.0.integrity", {"type": "hmac(sha256)", "journal_encryption": "none"}),
        "authenticated with dm-integrity (hmac(sha256))",
    ),
    "two segments": (
        lambda t: t["segments"].__setitem__("1", copy.deepcopy(t["segments"]["0"])),
        "has 2 data segments",
    ),
    "requirement": (
        _set("config.requirements", {"mandatory": ["future-thing"]}),
        "LUKS2 requirements ['future-thing'] not understood",
    ),
}


@pytest.mark.parametrize("name", list(FORGED_AT_READ))
def test_forged_header_refused_when_read(luks2: bytes, name: str) -> None:
    edit, words = FORGED_AT_READ[name]
    data = with_json(luks2, edit)
    with pytest.raises(LuksError) as caught:
        read_header(BytesSource(data, "forged"))
    assert words in caught.value.message
    assert_whole(probe_with_key(data), words)


@pytest.mark.parametrize("name", list(FORGED_AT_OPEN))
def test_forged_header_refused_when_opened(luks2: bytes, name: str) -> None:
    edit, words = FORGED_AT_OPEN[name]
    data = with_json(luks2, edit)
    source = BytesSource(data, "forged")
    header = read_header(source)  # readable as a header: its notes are shown
    assert header.notes()[0].startswith("LUKS2, aes-xts-plain64")
    started = time.monotonic()
    with pytest.raises(LuksError) as caught:
        readable(header, len(data), "forged")
        unlock(source, header, PASSPHRASE.encode(), "passphrase 1")
    assert words in caught.value.message
    assert_whole(probe_with_key(data), words)
    assert time.monotonic() - started < 5, "a forged KDF setting ran instead of being refused"


def test_slots_set_to_be_ignored_are_not_tried(luks2: bytes) -> None:
    data = with_json(luks2, _set("keyslots.0.priority", 0))
    words = "this LUKS volume sets all its key slots to priority 'ignore': none is tried"
    with pytest.raises(LuksKeyError, match=words):
        source = BytesSource(data, "ignored")
        unlock(source, read_header(source), PASSPHRASE.encode(), "passphrase 1")
    assert_whole(probe_with_key(data), "not unlocked: this LUKS volume sets all its key slots")


def test_forged_luks1_slots(luks1: bytes) -> None:
    slot0 = LUKS1.size
    active, iterations, salt, material, stripes = LUKS1_SLOT.unpack_from(luks1, slot0)
    cases = {
        "key material past the end": (material, 1 << 30, "key slot 0's key material"),
        "damaged active word": (material, stripes, "neither enabled nor disabled"),
        "iterations": (material, stripes, "PBKDF2 with 4294967295 iterations"),
    }
    for name, (where, count, words) in cases.items():
        data = bytearray(luks1)
        word = 0x12345678 if name == "damaged active word" else active
        turns = 0xFFFFFFFF if name == "iterations" else iterations
        LUKS1_SLOT.pack_into(data, slot0, word, turns, salt, where, count)
        assert_whole(probe_with_key(bytes(data)), words)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ((*SMALL, "--cipher", "aes-ctr-plain64"), "cipher 'aes-ctr-plain64' is not supported"),
        (("--header", "{folder}/detached.hdr"), "a detached LUKS header"),
    ],
    ids=["aes-ctr", "detached-header"],
)
def test_made_by_cryptsetup_but_not_read_here(
    tmp_path: Path, key_file: Path, extra: tuple[str, ...], words: str
) -> None:
    args = tuple(a.format(folder=tmp_path) for a in extra)
    data = formatted(tmp_path, key_file, *args)
    if "--header" in args:
        data = (tmp_path / "detached.hdr").read_bytes()
    assert_whole(probe_with_key(data), words)


def test_reencryption_in_progress(tmp_path: Path, key_file: Path) -> None:
    image = tmp_path / "volume.img"
    with open(image, "wb") as f:
        f.truncate(SIZE)
    format_header(image, key_file, *SMALL)
    run(
        [
            "cryptsetup", "reencrypt", "--init-only", "--force-offline-reencrypt",
            "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
            "--key-file", str(key_file), str(image),
        ]
    )  # fmt: skip
    volume = probe_with_key(image.read_bytes())
    assert_whole(volume, "a LUKS2 reencryption is in progress (requirement online-reencrypt")


def read_or_refuse(data: bytes) -> None:
    """The header in ``data`` is read, described and judged readable, or refused: nothing else."""
    source = BytesSource(data, "fuzzed")
    try:
        header = read_header(source)
        header.notes()
        readable(header, source.size, "fuzzed")
    except LuksError:
        pass


def _leaves(node: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))] or [path]
    return [path]


def _containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.text(max_size=12)
    | st.sampled_from(["0", "dynamic", "18446744073709551616", "pbkdf2", "argon2i", "luks2"]),
    _containers,
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_luks2_json_is_read_or_refused(luks2: bytes, data: st.DataObject) -> None:
    tree = json_of(luks2)
    path = data.draw(st.sampled_from(_leaves(tree)))
    value = data.draw(JSON_VALUES)
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    forged = with_json_text(luks2[: 2 * MiB], json.dumps(tree).encode())
    read_or_refuse(forged)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, 591), st.integers(1, 255)), min_size=1, max_size=6))
def test_fuzzed_luks1_header_is_read_or_refused(luks1: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(luks1)
    for offset, mask in flips:
        if offset >= 6:  # keep the magic: the prober sends anything else elsewhere
            data[offset] ^= mask
    read_or_refuse(bytes(data))
