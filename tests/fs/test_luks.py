"""LUKS1 and LUKS2 volumes made by cryptsetup with a real ext4 inside (tests/luks_volumes.py),
opened natively and mapped by the used blocks of that ext4, against the truth:

- the volume key cryptsetup dumps (``luksDump --dump-volume-key``) for the key we open;
- cryptsetup's own view of the header (``luksDump``) for what the header says;
- the plaintext ext4 image the volume was made from, byte for byte, for the unlocked view;
- our ext4 map of that plaintext (itself checked against dumpe2fs's free blocks) for the map;
- a copy holding only the mapped runs: cryptsetup still opens it, and decrypted it is an ext4
  that e2fsck passes and whose files (debugfs rdump) hash as built.

Five kinds: LUKS2 aes-xts-plain64 over 512- and 4096-byte sectors, LUKS2 aes-cbc-essiv:sha256,
LUKS1 aes-xts-plain64 and LUKS1 aes-cbc-essiv:sha256 with SHA-1 (the old default); PBKDF2,
Argon2i and Argon2id key slots.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from clonebay.fs import extents
from clonebay.fs.keyring import Keyring
from clonebay.fs.luks_header import read_header
from clonebay.fs.luks_keys import unlock
from clonebay.fs.luks_view import UnlockedLuks
from clonebay.fs.probe import probe_volume
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import FileSource
from clonebay.system.run import output
from clonebay.testdisks import ext as extdisk
from clonebay.testdisks.tree import Tree, small_tree
from tests.fs.lvmdisks import loops, lvm, lvm_segments, read_lv, write_lv
from tests.fs.test_ext import dumpe2fs_used
from tests.luks_volumes import (
    CASES,
    PASSPHRASE,
    Case,
    add_key,
    copy_of,
    dump_fields,
    encrypt_in_place,
    opens_with,
    run,
    secret_file,
    volume_key,
)
from tests.oracles import copy_extents

MiB = 1 << 20
FILE_SIZE = 48 * MiB  # the plain file; its ext4 is the first EXT_SIZE bytes, zeros after
EXT_SIZE = 32 * MiB
DATA_OFFSET = 8 * MiB  # where reencrypt --reduce-device-size 16M puts the data
VIEW_SIZE = FILE_SIZE - DATA_OFFSET
# What reencrypt encrypted: the file less --reduce-device-size (16 MiB). The view's last 8 MiB
# (the file's, never written) decrypt to noise, as with cryptsetup open.
ENCRYPTED = FILE_SIZE - 16 * MiB
LABEL = "luks-inner"


@dataclass(frozen=True)
class Plain:
    """The ext4 every volume holds: its file, its tree, and our map of it."""

    image: Path
    tree: Tree
    used: tuple[Extent, ...]


@dataclass(frozen=True)
class Built:
    case: Case
    image: Path
    key_file: Path
    plain: Plain


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("luks")


@pytest.fixture(scope="module")
def plain(work: Path) -> Plain:
    tree = small_tree(work / "tree", files=60, big_file=3 * MiB)
    image = extdisk.build_ext(work / "plain.img", EXT_SIZE, tree, "ext4", label=LABEL)
    with open(image, "r+b") as f:
        f.truncate(FILE_SIZE)
    with FileSource(str(image)) as src:
        volume = probe_volume(src)
    assert volume.fstype == "ext4" and volume.copy is CopyMethod.NATIVE
    return Plain(image, tree, volume.used)


@pytest.fixture(scope="module")
def key_file(work: Path) -> Path:
    return secret_file(work, PASSPHRASE.encode())


@pytest.fixture(scope="module")
def volumes(work: Path, plain: Plain, key_file: Path) -> Callable[[str], Built]:
    """The volume of the case named, made on first use."""
    made: dict[str, Built] = {}

    def volume(name: str) -> Built:
        if name not in made:
            case = next(c for c in CASES if c.name == name)
            image = copy_of(plain.image, work / f"{case.name}.img")
            encrypt_in_place(image, case, key_file)
            made[name] = Built(case, image, key_file, plain)
        return made[name]

    return volume


@pytest.fixture(params=[c.name for c in CASES])
def built(request: pytest.FixtureRequest, volumes: Callable[[str], Built]) -> Built:
    return volumes(request.param)


def sha256_of(read: FileSource | UnlockedLuks, size: int) -> str:
    digest = hashlib.sha256()
    for at in range(0, size, 4 * MiB):
        digest.update(read.pread(min(4 * MiB, size - at), at))
    return digest.hexdigest()


def expected_runs(offset: int, inner: tuple[Extent, ...]) -> tuple[Extent, ...]:
    return extents.normalize((Extent(0, offset), *extents.shift(inner, offset)))


def test_plain_map_is_dumpe2fs(plain: Plain) -> None:
    fs_only = copy_of(plain.image, plain.image.with_name("fs-only.img"))
    with open(fs_only, "r+b") as f:
        f.truncate(EXT_SIZE)
    assert plain.used == extents.normalize((Extent(0, 2048), *dumpe2fs_used(fs_only)))


def test_header_agrees_with_luksdump(built: Built) -> None:
    fields = dump_fields(built.image)
    uuid = output(["cryptsetup", "luksUUID", str(built.image)]).strip()
    with FileSource(str(built.image)) as src:
        header = read_header(src)
    case = built.case
    assert (header.version, header.uuid) == (int(fields["Version"]), uuid)
    assert (header.cipher, header.key_bits) == (case.cipher, case.key_bits)
    assert header.data_offset == DATA_OFFSET
    if case.version == 1:
        assert int(fields["Payload offset"]) * 512 == header.data_offset
        assert fields["Hash spec"] == case.hash
    else:
        assert fields["offset"] == f"{header.data_offset} [bytes]"
        assert fields["sector"] == f"{case.sector} [bytes]"
    assert header.segments[0].sector_size == case.sector
    assert [s.number for s in header.keyslots] == [0]
    assert header.keyslots[0].kdf.kind == case.kdf
    assert header.notes()[0].startswith(f"LUKS{case.version}, {case.cipher} ({case.key_bits}-bit")


def test_volume_key_is_cryptsetups(built: Built) -> None:
    with FileSource(str(built.image)) as src:
        key = unlock(src, read_header(src), PASSPHRASE.encode(), "passphrase 1")
    assert key.slot == 0
    assert key.key == volume_key(built.image, built.key_file, built.case.version)
    assert key.key.hex() not in repr(key)


def test_unlocked_view_is_the_plaintext(built: Built) -> None:
    with FileSource(str(built.image)) as src, FileSource(str(built.plain.image)) as clear:
        header = read_header(src)
        view = UnlockedLuks(src, header, unlock(src, header, PASSPHRASE.encode(), "passphrase"))
        assert view.size == VIEW_SIZE
        assert sha256_of(view, ENCRYPTED) == sha256_of(clear, ENCRYPTED)
        # reads that start and end inside sectors
        assert view.pread(5000, 1234567) == clear.pread(5000, 1234567)


def test_probe_maps_the_ext4_inside(built: Built) -> None:
    keys = Keyring(passwords=["not it", PASSPHRASE])
    with FileSource(str(built.image)) as src:
        volume = probe_volume(src, keys=keys)
        header = read_header(src)
    assert (volume.fstype, volume.copy, volume.state) == (
        "luks",
        CopyMethod.NATIVE,
        VolumeState.ENCRYPTED,
    )
    assert (volume.size, volume.label, volume.uuid) == (FILE_SIZE, LABEL, header.uuid)
    assert volume.used == expected_runs(DATA_OFFSET, built.plain.used)
    assert volume.notes[-1] == f"unlocked with key slot 0; inside: ext4 {LABEL!r}"
    assert set(keys.opened) == {f"luks:{header.uuid}"}
    said = repr((volume, keys))
    assert PASSPHRASE not in said and "not it" not in said


def test_copy_of_the_used_runs_opens_and_holds_the_files(built: Built, work: Path) -> None:
    keys = Keyring(passwords=[PASSPHRASE])
    with FileSource(str(built.image)) as src:
        volume = probe_volume(src, keys=keys)
    copy = work / f"{built.case.name}-copy.img"
    copy_extents(built.image, copy, volume.used)
    assert opens_with(copy, built.key_file), "cryptsetup does not open the copy"
    decrypted = work / f"{built.case.name}-decrypted.img"
    with FileSource(str(copy)) as src, open(decrypted, "wb") as out:
        again = probe_volume(src, keys=keys)  # the cached key, checked against the copy's digest
        assert again.used == volume.used
        header = read_header(src)
        view = UnlockedLuks(src, header, unlock(src, header, PASSPHRASE.encode(), "passphrase"))
        out.write(view.pread(EXT_SIZE, 0))
    extdisk.fsck(decrypted)
    extdisk.check_tree(decrypted, built.plain.tree)


def test_wrong_secrets_leave_it_locked(volumes: Callable[[str], Built]) -> None:
    built = volumes("luks2-xts-4k-argon2id")
    keys = Keyring(passwords=["Tr0ub4dor&3"], key_files=[b"not the key file"])
    with FileSource(str(built.image)) as src:
        volume = probe_volume(src, keys=keys)
    assert (volume.copy, volume.state, volume.used) == (
        CopyMethod.RAW,
        VolumeState.ENCRYPTED,
        (Extent(0, FILE_SIZE),),
    )
    assert volume.reason.endswith(
        "not unlocked: passphrase 1 does not open key slot 0; key file 1 does not open key slot 0"
    )
    assert keys.unused() and not keys.opened
    said = repr((volume, keys))
    assert "Tr0ub4dor" not in said and "not the key file" not in said
    recovery = "111111-222222-333333-444444-555555-666666-777777-888888"
    with FileSource(str(built.image)) as src:
        volume = probe_volume(src, keys=Keyring(recovery_passwords=[recovery]))
    assert volume.copy is CopyMethod.RAW
    assert volume.reason.endswith("not unlocked: no passphrase or key file was given (a LUKS"
                                  " volume opens with those only)")  # fmt: skip


def test_without_keys_it_is_copied_whole_with_its_facts(
    volumes: Callable[[str], Built], work: Path
) -> None:
    built = volumes("luks2-xts-512")
    labelled = copy_of(built.image, work / "labelled.img")
    run(["cryptsetup", "config", "--label", "backup disk", str(labelled)])
    with FileSource(str(labelled)) as src:
        volume = probe_volume(src)
        header = read_header(src)
    assert volume == Volume(
        "luks",
        FILE_SIZE,
        (Extent(0, FILE_SIZE),),
        CopyMethod.RAW,
        VolumeState.ENCRYPTED,
        label="backup disk",
        uuid=header.uuid,
        reason="LUKS: the copy keeps its encryption and key slots",
        notes=(
            f"LUKS2, aes-xts-plain64 (512-bit key, 512-byte sectors), data at {DATA_OFFSET}",
            f"LUKS UUID {header.uuid}, label 'backup disk'",
            "active key slots: 0 (pbkdf2)",
        ),
    )


@pytest.mark.parametrize("name", ["luks2-xts-512", "luks1-xts"])
def test_a_key_file_opens_its_own_slot(
    name: str, volumes: Callable[[str], Built], work: Path
) -> None:
    built = volumes(name)
    image = copy_of(built.image, work / f"{built.case.name}-keyfile.img")
    secret = random.Random(7).randbytes(4096)
    key_file = secret_file(work, secret, f"{built.case.name}.key")
    add_key(image, built.key_file, key_file)
    keys = Keyring(key_files=[secret])
    with FileSource(str(image)) as src:
        volume = probe_volume(src, keys=keys)
    assert volume.copy is CopyMethod.NATIVE
    assert volume.notes[-1] == f"unlocked with key slot 1; inside: ext4 {LABEL!r}"
    assert "active key slots: 0 (pbkdf2), 1 (pbkdf2)" in volume.notes
    assert volume.used == expected_runs(DATA_OFFSET, built.plain.used)
    opened = keys.opened[f"luks:{volume.uuid}"]
    assert getattr(opened, "key", b"") == volume_key(image, key_file, built.case.version)
    os.unlink(image)


def test_lvm_inside_luks_is_mapped_lv_by_lv(work: Path, plain: Plain, key_file: Path) -> None:
    """LUKS holding an LVM PV whose LV holds the ext4 (Debian's and Ubuntu's encrypted install):
    the map is the header area plus the PV's own map shifted, and a copy of only those runs
    decrypts to a PV whose LV is the ext4 with every file as built."""
    pv = work / "pv.img"
    pv_size = EXT_SIZE + 8 * MiB  # the LV, the PV's metadata, rounding to 4 MiB extents
    with open(pv, "wb") as f:
        f.truncate(pv_size)
    with loops(pv) as devices:
        (dev,) = devices
        lvm(devices, "pvcreate", "-q", "-ff", "-y", dev)
        lvm(devices, "vgcreate", "-q", "-s", "4m", "luksvg", dev)
        lvm(devices, "lvcreate", "-q", "-an", "-Zn", "-L", "32m", "-n", "root", "luksvg")
        segments = lvm_segments(devices, "luksvg")
    write_lv(pv, segments, "root", plain.image)  # the ext4: its 32 MiB, ~10 of them used
    with FileSource(str(pv)) as src:
        pv_map = probe_volume(src)
    assert (pv_map.fstype, pv_map.copy) == ("lvm2-pv", CopyMethod.NATIVE), pv_map.reason
    image = copy_of(pv, work / "lvm-in-luks.img")
    with open(image, "r+b") as f:
        f.truncate(pv_size + 16 * MiB)  # reencrypt's --reduce-device-size
    encrypt_in_place(image, CASES[0], key_file)
    with FileSource(str(image)) as src:
        volume = probe_volume(src, keys=Keyring(key_files=[PASSPHRASE.encode()]))
    assert volume.copy is CopyMethod.NATIVE, volume.reason
    assert volume.notes[-1] == "unlocked with key slot 0; inside: lvm2-pv 'luksvg'"
    assert volume.used == expected_runs(DATA_OFFSET, pv_map.used)
    copy = work / "lvm-in-luks-copy.img"
    copy_extents(image, copy, volume.used)
    decrypted = work / "lvm-in-luks-decrypted.img"
    with FileSource(str(copy)) as src, open(decrypted, "wb") as out:
        header = read_header(src)
        view = UnlockedLuks(src, header, unlock(src, header, PASSPHRASE.encode(), "passphrase"))
        out.write(view.pread(pv_size, 0))
    root = read_lv(decrypted, segments, "root", work / "root.img")
    extdisk.fsck(root)
    extdisk.check_tree(root, plain.tree)
