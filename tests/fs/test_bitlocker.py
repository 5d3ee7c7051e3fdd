"""BitLocker metadata, native unlocking and the decrypted view, against nine volumes made by
Windows (cryptsetup's test images, tests/data/bitlocker): their protectors, every way each one
opens, the SHA-256 of each whole decrypted volume as cryptsetup presents it, refusals of wrong
or malformed keys, damaged and hostile metadata, and dislocker's decryption as a second oracle."""

from __future__ import annotations

import hashlib
import random
import shutil
import struct
import tarfile
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clonebay import cli
from clonebay.errors import InputError
from clonebay.fs.bitlocker_crypt import sector_decryptor
from clonebay.fs.bitlocker_diffuser import undiffuse
from clonebay.fs.bitlocker_entries import BitlockerError
from clonebay.fs.bitlocker_keys import (
    BitlockerKeyError,
    StartupKey,
    read_startup_key,
    recovery_key,
    unlock,
)
from clonebay.fs.bitlocker_meta import AREA, BLOCK_HEADER, FveMetadata, read_metadata
from clonebay.fs.bitlocker_protectors import ProtectorKind
from clonebay.fs.bitlocker_view import Kind, Segment, UnlockedVolume, segments
from clonebay.fs.probe import probe_volume
from clonebay.model import CopyMethod, VolumeState
from clonebay.system.blockdev import ByteSource, BytesSource, FileSource
from clonebay.system.run import run
from tests.bitlocker_data import BEK, READABLE, TARBALL, VOLUMES, Shipped, load_shipped

CHUNK = 4 << 20
# Protectors a volume has beyond those images.conf names: the startup-key volume also has a
# password protector whose password images.conf does not give (PW is empty there).
UNNAMED = {"bitlk-aes-xts-128-startup-key": [ProtectorKind.PASSWORD]}


@pytest.fixture(scope="session")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Shipped]:
    return load_shipped(tmp_path_factory.mktemp("bitlocker"))


def _meta(volume: Shipped) -> FveMetadata:
    with FileSource(str(volume.path)) as src:
        return read_metadata(src)


def _bek(volume: Shipped) -> StartupKey:
    path = volume.path.parent / BEK
    return read_startup_key(path.read_bytes(), path.name)


def _open_any(volume: Shipped, meta: FveMetadata) -> UnlockedVolume:
    if volume.password:
        key = unlock(meta, password=volume.password)
    elif volume.recovery:
        key = unlock(meta, recovery_password=next(iter(volume.recovery)))
    else:
        key = unlock(meta, clear_key=True)
    return UnlockedVolume(FileSource(str(volume.path)), meta, key)


def _sha256(view: ByteSource) -> str:
    digest = hashlib.sha256()
    for offset in range(0, view.size, CHUNK):
        digest.update(view.pread(min(CHUNK, view.size - offset), offset))
    return digest.hexdigest()


@pytest.mark.parametrize("name", VOLUMES)
def test_metadata_matches_images_conf(shipped: dict[str, Shipped], name: str) -> None:
    volume = shipped[name]
    meta = _meta(volume)
    assert meta.volume_guid == volume.guid
    assert meta.method.mode == volume.mode
    found = {p.guid: p.kind for p in meta.protectors}
    assert {g: k for g, k in found.items() if g in volume.protectors} == volume.protectors
    assert [k for g, k in found.items() if g not in volume.protectors] == UNNAMED.get(name, [])
    assert sorted(meta.recovery_key_ids) == sorted(volume.recovery.values())
    assert meta.togo == ("togo" in name)
    assert meta.encrypt_on_write == name.endswith("-eow")
    assert meta.method.key_bits == (256 if "256" in name else 128)
    assert meta.copy == 0 and not meta.damaged
    assert meta.description and meta.created is not None
    # The metadata areas and the relocated boot sectors are what a BitLocker copy must keep.
    kept = meta.kept_extents
    assert len(kept) == 4 and all(e.end <= volume.path.stat().st_size for e in kept)
    assert {e.start for e in kept} == {*meta.block_offsets, meta.header_offset}


def _secrets(volume: Shipped) -> list[tuple[str, dict[str, object]]]:
    """(GUID of the protector it must open, unlock() keywords) for every secret the volume has."""
    out: list[tuple[str, dict[str, object]]] = []
    for guid, kind in volume.protectors.items():
        if kind is ProtectorKind.PASSWORD:
            out.append((guid, {"password": volume.password}))
        elif kind is ProtectorKind.STARTUP_KEY:
            out.append((guid, {"startup_key": _bek(volume)}))
        elif kind is ProtectorKind.CLEAR_KEY:
            out.append((guid, {"clear_key": True}))
    out.extend((guid, {"recovery_password": rp}) for rp, guid in volume.recovery.items())
    return out


@pytest.mark.parametrize("name", VOLUMES)
def test_every_protector_unlocks(shipped: dict[str, Shipped], name: str) -> None:
    volume = shipped[name]
    meta = _meta(volume)
    secrets = _secrets(volume)
    assert len(secrets) == len(volume.protectors)  # every protector listed gets tried
    keys = set()
    for guid, kwargs in secrets:
        key = unlock(meta, **kwargs)  # type: ignore[arg-type]
        assert guid in key.protector  # the intended protector opened it, not another one
        keys.add((key.fvek, key.tweak))
    assert len(keys) == 1  # all of them open the same full-volume key


@pytest.mark.parametrize("name", READABLE)
def test_whole_decrypted_volume_matches_cryptsetup(shipped: dict[str, Shipped], name: str) -> None:
    volume = shipped[name]
    meta = _meta(volume)
    view = _open_any(volume, meta)
    assert _sha256(view) == volume.sha256
    # What the hash proves, said directly: byte 0 is the real boot sector, metadata is zeros.
    boot = view.read(0, 512)
    assert boot[3:11] == (b"MSDOS5.0" if meta.togo else b"NTFS    ")
    assert boot[510:512] == b"\x55\xaa"
    for offset in meta.block_offsets:
        assert view.read(offset, AREA) == bytes(AREA)
    assert view.read(meta.header_offset, meta.header_size) == bytes(meta.header_size)
    # Unaligned reads are slices of aligned ones.
    assert view.read(1000, 3000) == view.read(512, 4096)[488:3488]
    with pytest.raises(InputError, match="past the end"):
        view.read(view.size - 10, 11)


def test_view_layout_is_cryptsetups(shipped: dict[str, Shipped]) -> None:
    """The segment table cryptsetup would give device-mapper for bitlk-aes-xts-128, by hand:
    boot sectors from the relocated area, the three 64 KiB copies and that area as zeros."""
    meta = _meta(shipped["bitlk-aes-xts-128"])
    assert (meta.header_offset, meta.header_size) == (35278848, 8192)
    assert meta.block_offsets == (35213312, 46256128, 57909248)
    crypt, zero, plain = Kind.CRYPT, Kind.ZERO, Kind.PLAIN
    assert segments(meta, 104857600) == (
        Segment(0, 8192, crypt, 35278848),
        Segment(8192, 35213312, crypt, 8192),
        Segment(35213312, 35287040, zero, 35213312),  # copy 1, then the relocated area
        Segment(35287040, 46256128, crypt, 35287040),
        Segment(46256128, 46321664, zero, 46256128),
        Segment(46321664, 57909248, crypt, 46321664),
        Segment(57909248, 57974784, zero, 57909248),
        Segment(57974784, 104857600, crypt, 57974784),
    )
    # A conversion that stopped at 80 MiB leaves the rest in clear; a cut-short volume ends early.
    tail = segments(replace(meta, encrypted_size=80 << 20), 104857600)
    assert tail[-2:] == (
        Segment(57974784, 80 << 20, crypt, 57974784),
        Segment(80 << 20, 104857600, plain, 80 << 20),
    )
    assert segments(meta, 40 << 20)[-1] == Segment(35287040, 40 << 20, crypt, 35287040)
    with pytest.raises(BitlockerError, match="not a whole 4096-byte sector"):
        segments(replace(meta, sector_size=4096, header_offset=35278848 + 512), 104857600)


def test_encrypt_on_write_volume_unlocks_but_is_not_shown(shipped: dict[str, Shipped]) -> None:
    volume = shipped["bitlk-aes-xts-128-eow"]
    meta = _meta(volume)
    key = unlock(meta, password=volume.password)
    with pytest.raises(BitlockerError, match="still encrypting this volume on write"):
        UnlockedVolume(FileSource(str(volume.path)), meta, key)


@pytest.mark.parametrize("name", ["bitlk-aes-xts-128", "bitlk-aes-cbc-elephant-128"])
def test_same_bytes_as_dislocker(shipped: dict[str, Shipped], name: str, tmp_path: Path) -> None:
    if shutil.which("dislocker-file") is None:
        pytest.skip("dislocker-file is not installed (Debian package dislocker; make apt)")
    volume = shipped[name]
    out = tmp_path / "dislocker.out"
    run(["dislocker-file", "-V", str(volume.path), f"-u{volume.password}", "--", str(out)])
    view = _open_any(volume, _meta(volume))
    with FileSource(str(out)) as theirs:
        assert theirs.size == view.size
        for offset in range(0, view.size, CHUNK):
            n = min(CHUNK, view.size - offset)
            assert view.pread(n, offset) == theirs.pread(n, offset), f"differs in {offset}+{n}"


def test_wrong_secrets_are_refused_by_name(shipped: dict[str, Shipped]) -> None:
    volume = shipped["bitlk-aes-xts-128"]
    meta = _meta(volume)
    with pytest.raises(BitlockerKeyError, match=r"^the password does not unlock this volume"):
        unlock(meta, password="anaconda!")
    other = next(iter(shipped["bitlk-aes-xts-256"].recovery))  # well-formed, another volume's
    with pytest.raises(BitlockerKeyError, match="recovery password does not unlock this volume"):
        unlock(meta, recovery_password=other)
    with pytest.raises(BitlockerKeyError, match="no startup key protector"):
        unlock(meta, startup_key=_bek(shipped["bitlk-aes-xts-128-startup-key"]))
    with pytest.raises(BitlockerKeyError, match="no clear key protector"):
        unlock(meta, clear_key=True)
    with pytest.raises(BitlockerKeyError, match="exactly one"):
        unlock(meta, password="a", recovery_password=other)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("235818-357951-253979-013365-241120-245575-342914-591911", "group 8 .* multiple of 11"),
        ("235818-357951-253978-013365-241120-245575-342914-591910", "group 3 .* multiple of 11"),
        ("999999-357951-253979-013365-241120-245575-342914-591910", "group 1 .* below 720896"),
        ("235818-357951-253979-013365-241120-245575-342914", "8 groups of 6.* has 7 groups"),
        ("235818-357951-253979-01336-241120-245575-342914-591910", "8 groups of 6"),
        ("anaconda", "8 groups of 6"),
    ],
)
def test_malformed_recovery_passwords_name_the_group(text: str, words: str) -> None:
    with pytest.raises(BitlockerKeyError, match=words) as caught:
        recovery_key(text)
    assert "235818" not in str(caught.value) and "357951" not in str(caught.value)


def test_recovery_password_is_eight_words_of_quotients() -> None:
    key = recovery_key(" 000011-000022-000033-000044-000055-000066-000077-720885\n")
    assert struct.unpack("<8H", key) == (1, 2, 3, 4, 5, 6, 7, 65535)


def test_startup_key_of_another_volume_or_altered_is_refused(shipped: dict[str, Shipped]) -> None:
    volume = shipped["bitlk-aes-xts-128-startup-key"]
    meta = _meta(volume)
    bek = _bek(volume)
    foreign = StartupKey("00000000-1111-2222-3333-444444444444", "", bek.key)
    with pytest.raises(BitlockerKeyError, match=r"is not one of this volume's .*4381F759"):
        unlock(meta, startup_key=foreign)
    altered = StartupKey(bek.guid, "", bytes(b ^ 1 for b in bek.key))
    with pytest.raises(BitlockerKeyError, match="the startup key does not unlock this volume"):
        unlock(meta, startup_key=altered)
    elsewhere = StartupKey(bek.guid, shipped["bitlk-aes-xts-128"].guid, bek.key)
    with pytest.raises(BitlockerKeyError, match="belongs to BitLocker volume"):
        unlock(meta, startup_key=elsewhere)
    raw = (volume.path.parent / BEK).read_bytes()
    with pytest.raises(BitlockerKeyError, match=r"x\.BEK: not a BitLocker \.BEK"):
        read_startup_key(raw[:-1], "x.BEK")
    with pytest.raises(BitlockerKeyError, match="too short"):
        read_startup_key(b"\0" * 20, "x.BEK")


class Patched:
    """A ByteSource over an image with some byte runs replaced, or cut short."""

    def __init__(self, base: ByteSource, patches: dict[int, bytes], size: int = 0) -> None:
        self._base, self._patches = base, patches
        self.size = size or base.size
        self.name = "patched"

    def pread(self, length: int, offset: int) -> bytes:
        if offset + length > self.size:
            raise InputError(f"patched: read of {length} bytes at offset {offset} is past the end")
        data = bytearray(self._base.pread(length, offset))
        for at, value in self._patches.items():
            lo, hi = max(at, offset), min(at + len(value), offset + length)
            if lo < hi:
                data[lo - offset : hi - offset] = value[lo - at : hi - at]
        return bytes(data)


def _resealed(src: ByteSource, offset: int, edits: dict[int, int]) -> dict[int, bytes]:
    """Patches that edit a metadata copy and fix its CRC-32, so only the entry parser sees it."""
    area = bytearray(src.pread(AREA, offset))
    size = BLOCK_HEADER.unpack_from(area)[1] << 4
    for at, value in edits.items():
        area[at] = value
    struct.pack_into("<I", area, size + 4, zlib.crc32(area[:size]))
    return {offset: bytes(area)}


def test_damaged_first_copy_opens_from_the_second(shipped: dict[str, Shipped]) -> None:
    volume = shipped["bitlk-aes-xts-128"]
    with FileSource(str(volume.path)) as base:
        meta = read_metadata(base)
        first, second, third = meta.block_offsets
        damaged = Patched(base, {first + 300: b"\xff\xfe"})
        again = read_metadata(damaged)
        assert again.copy == 1
        assert [(p.guid, p.kind) for p in again.protectors] == [
            (p.guid, p.kind) for p in meta.protectors
        ]
        assert again.damaged == (f"patched: FVE metadata copy 1 at offset {first}: CRC-32 mismatch"
                                 " (damaged)",)  # fmt: skip
        view = UnlockedVolume(damaged, again, unlock(again, password=volume.password))
        assert _sha256(view) == volume.sha256
        ruined = Patched(base, {o + 8: b"\0\0" for o in (first, second, third)})
        words = (
            rf"no readable FVE metadata copy: .*copy 1 at offset {first}.*copy 3 at offset {third}"
        )
        with pytest.raises(BitlockerError, match=words + ": block size 0"):
            read_metadata(ruined)


def test_metadata_edited_with_a_good_crc_fails_its_signed_hash(shipped: dict[str, Shipped]) -> None:
    volume = shipped["bitlk-aes-cbc-128"]
    with FileSource(str(volume.path)) as base:
        meta = read_metadata(base)
        at = 112 + 8  # the first character of the description entry's string
        patches: dict[int, bytes] = {}
        for offset in meta.block_offsets:
            patches |= _resealed(base, offset, {at: ord("X")})
        edited = read_metadata(Patched(base, patches))
        assert edited.description.startswith("X")
        with pytest.raises(BitlockerError, match="changed outside BitLocker"):
            unlock(edited, password=volume.password)


@pytest.mark.parametrize("size", [0xFFFF, 7, 1])
def test_hostile_entry_sizes_name_the_offset(shipped: dict[str, Shipped], size: int) -> None:
    volume = shipped["bitlk-aes-xts-128"]
    with FileSource(str(volume.path)) as base:
        meta = read_metadata(base)
        patches: dict[int, bytes] = {}
        for offset in meta.block_offsets:
            patches |= _resealed(base, offset, {112: size & 0xFF, 113: size >> 8})
        first = meta.block_offsets[0]
        with pytest.raises(BitlockerError, match=rf"entry at offset {first + 112} claims {size}"):
            read_metadata(Patched(base, patches))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(112, 967), st.integers(0, 255)), min_size=1, max_size=12))
def test_mutated_entries_never_crash(edits: list[tuple[int, int]]) -> None:
    """Random bytes in the entries and the validation record (from 880) of all three copies,
    CRCs fixed: parsed or refused, never a traceback. The volume is the archive's
    bitlk-aes-xts-128, read once per test process."""
    base = BytesSource(_first_copy_image())
    meta = read_metadata(base)
    patches: dict[int, bytes] = {}
    for offset in meta.block_offsets:
        patches |= _resealed(base, offset, dict(edits))
    try:
        read_metadata(Patched(base, patches))
    except BitlockerError as exc:
        assert "FVE metadata copy" in str(exc)


_IMAGE_CACHE: list[bytes] = []


def _first_copy_image() -> bytes:
    """bitlk-aes-xts-128's first 64 MiB (boot sector and all three metadata copies) in memory."""
    if not _IMAGE_CACHE:
        with tarfile.open(TARBALL) as tar:
            reader = tar.extractfile("bitlocker/bitlk-aes-xts-128.img")
            assert reader is not None
            _IMAGE_CACHE.append(reader.read(64 << 20))
    return _IMAGE_CACHE[0]


def test_truncated_and_garbage_headers_are_refused(shipped: dict[str, Shipped]) -> None:
    outside = r"copy 1 at offset 35213312 lies outside the volume \(31457280 bytes\)"
    with (
        FileSource(str(shipped["bitlk-aes-xts-128"].path), 0, 30 << 20) as cut,
        pytest.raises(BitlockerError, match=outside),
    ):
        read_metadata(cut)
    with pytest.raises(BitlockerError, match="too small for a BitLocker volume"):
        read_metadata(BytesSource(b"\xeb\x58\x90-FVE-FS-" + bytes(300)))
    noise = bytearray(random.Random(7).randbytes(1 << 16))
    noise[0:13] = b"\xeb\x58\x90-FVE-FS-\x00\x02"
    with pytest.raises(BitlockerError, match=r"unknown BitLocker GUID .* at offset 160"):
        read_metadata(BytesSource(bytes(noise)))
    noise[0:3] = b"\xeb\x52\x90"
    with pytest.raises(BitlockerError, match="Windows Vista"):
        read_metadata(BytesSource(bytes(noise)))
    with pytest.raises(BitlockerError, match="no BitLocker signature"):
        read_metadata(BytesSource(bytes(1 << 16)))


def test_keys_never_printed(shipped: dict[str, Shipped]) -> None:
    volume = shipped["bitlk-aes-xts-128-clearkey-only"]
    meta = _meta(volume)
    key = unlock(meta, clear_key=True)
    bek = _bek(shipped["bitlk-aes-xts-128-startup-key"])
    view = UnlockedVolume(FileSource(str(volume.path)), meta, key)
    secrets = [key.fvek, meta.protectors[0].clear_key, bek.key]
    printed = " ".join(
        [repr(meta), repr(key), str(key), repr(bek), repr(view), repr(sector_decryptor(key))]
    )
    for secret in secrets:
        assert secret.hex() not in printed.lower()
        assert repr(secret)[2:-1] not in printed
    with pytest.raises(BitlockerKeyError) as caught:
        unlock(_meta(shipped["bitlk-aes-xts-128"]), password="hunter2-secret")
    assert "hunter2" not in str(caught.value)


def _diffuser_reference(sector: bytes, key: bytes) -> bytes:
    """Ferguson's diffuser B then A, undone word by word (dislocker's diffuser.c), then the key."""
    n = len(sector) // 4
    d = list(struct.unpack(f"<{n}I", sector))

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF if r else x

    for _ in range(3):
        for i in range(n):
            d[i] = (d[i] + (d[(i + 2) % n] ^ rotl(d[(i + 5) % n], (0, 10, 0, 25)[i % 4]))) & (
                0xFFFFFFFF
            )
    for _ in range(5):
        for i in range(n):
            d[i] = (d[i] + (d[(i - 2) % n] ^ rotl(d[(i - 5) % n], (9, 0, 13, 0)[i % 4]))) & (
                0xFFFFFFFF
            )
    plain = struct.pack(f"<{n}I", *d)
    return bytes(b ^ key[i % 32] for i, b in enumerate(plain))


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_packed_diffuser_equals_the_word_by_word_one(sector_size: int) -> None:
    """The images only have 512-byte sectors; 4Kn volumes take the same code with more words."""
    rng = random.Random(sector_size)
    count = 5
    data = rng.randbytes(sector_size * count)
    keys = rng.randbytes(32 * count)
    expected = b"".join(
        _diffuser_reference(
            data[k * sector_size : (k + 1) * sector_size], keys[32 * k : 32 * k + 32]
        )
        for k in range(count)
    )
    assert undiffuse(data, keys, sector_size) == expected
    # All-ones words carry out of every lane: the lanes must not leak into each other.
    ones = b"\xff" * (sector_size * count)
    assert undiffuse(ones, keys, sector_size) == b"".join(
        _diffuser_reference(ones[:sector_size], keys[32 * k : 32 * k + 32]) for k in range(count)
    )


@pytest.mark.parametrize("name", VOLUMES)
def test_probe_lists_protectors_and_recovery_key_ids(
    shipped: dict[str, Shipped], name: str
) -> None:
    volume = shipped[name]
    with FileSource(str(volume.path)) as src:
        probed = probe_volume(src)
    assert probed.fstype == "bitlocker"  # To Go too: its FAT32 face is not the volume
    assert probed.state is VolumeState.ENCRYPTED and probed.copy is CopyMethod.RAW
    notes = "\n".join(probed.notes)
    assert f"volume GUID {volume.guid}" in notes
    for guid in volume.protectors:
        assert f"{{{guid}}}" in notes
    for guid in volume.recovery.values():
        assert f"BitLocker recovery key ID: {guid}" in probed.notes


def test_probe_json_shows_the_notes(
    shipped: dict[str, Shipped], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    volume = shipped["bitlk-aes-xts-128-two-recovery"]
    assert cli.main(["probe", "--json", str(volume.path)]) == 0
    whole = json.loads(capsys.readouterr().out)["whole_disk"]
    assert whole["fstype"] == "bitlocker"
    assert "BitLocker recovery key ID: B7ADC334-FE6D-4AE4-B5C4-1C1D0DBC335B" in whole["notes"]


def test_probe_of_unreadable_metadata_still_copies_raw() -> None:
    sector = bytearray(random.Random(3).randbytes(1 << 16))
    sector[0:11] = b"\xeb\x58\x90-FVE-FS-"
    probed = probe_volume(BytesSource(bytes(sector)))
    assert probed.fstype == "bitlocker" and probed.copy is CopyMethod.RAW
    assert probed.notes == (
        "BitLocker metadata not readable: <memory>: sector size 27019 at offset 11",
    )
