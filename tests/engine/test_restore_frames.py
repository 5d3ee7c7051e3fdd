"""Restore from an image directory through the frame stream (imaging/frame_stream.py), on real
disks: the standard GPT test disk (ESP, NTFS, ext4, swap, a random partition) and a disk whose
image refers back to earlier frames in shuffled order across many packs come back byte for byte
(sha256 of the whole disk) onto a file, and onto a loop device over old data with every
filesystem clean by its own fsck (e2fsck -fn, ntfsfix -n, fsck.fat -n) and every file's hash
as recorded; the reader's browsing cache is never used; a damaged frame is named, and with the
check on nothing is written."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import ClassVar

import pytest

from clonebay import cli
from clonebay.engine import jobs
from clonebay.engine.restore import directory
from clonebay.errors import InputError
from clonebay.imaging import spec
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.spec import ImageError
from clonebay.testdisks import disks
from tests.diskcheck import assert_disk_matches
from tests.edgedisks import MIB, gpt_disk, layout, loop, sha256

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real disks and loop devices: root")


@pytest.fixture(scope="module")
def saved(gpt_disk: disks.BuiltDisk, tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("frames") / "image"
    assert cli.main(["save", "--pack-limit", "64", str(gpt_disk.path), str(image)]) == 0
    return image


class WatchedReader(ImageReader):
    """ImageReader that remembers every instance, to look at its counters after a restore."""

    opened: ClassVar[list[ImageReader]] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        WatchedReader.opened.append(self)


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> list[ImageReader]:
    WatchedReader.opened = []
    monkeypatch.setattr(directory, "ImageReader", WatchedReader)
    return WatchedReader.opened


def assert_untouched(readers: list[ImageReader]) -> None:
    (reader,) = readers
    assert reader.stats.as_dict() == dict.fromkeys(
        reader.stats.as_dict(), 0
    )  # no cache, no read_at


def test_standard_disk_restores_byte_identical_onto_a_file(
    gpt_disk: disks.BuiltDisk, saved: Path, tmp_path: Path, watched: list[ImageReader]
) -> None:
    target = tmp_path / "target.img"
    jobs.restore(str(saved), str(target), jobs.RestoreOptions(verify=True))
    assert sha256(target) == sha256(gpt_disk.path)
    assert_disk_matches(target, gpt_disk, tmp_path)  # fsck of every filesystem, file hashes
    assert_untouched(watched)


def test_standard_disk_restores_byte_identical_onto_a_loop_device(
    gpt_disk: disks.BuiltDisk, saved: Path, tmp_path: Path, watched: list[ImageReader]
) -> None:
    backing = tmp_path / "backing.img"
    with open(backing, "wb") as f:  # an old disk: random bytes where the restore writes nothing
        rng = random.Random(4)
        for _ in range(gpt_disk.size // (16 * MIB)):
            f.write(rng.randbytes(16 * MIB))
        f.truncate(gpt_disk.size)
    with loop(backing) as dev:
        jobs.restore(str(saved), dev, jobs.RestoreOptions(verify=True))
    # e2fsck -fn / ntfsfix -n / fsck.fat -n of each filesystem, file hashes, raw partitions
    # byte-identical (free space keeps the old bytes, so no whole-disk hash here)
    assert_disk_matches(backing, gpt_disk, tmp_path)
    assert_untouched(watched)


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A GPT disk with two partitions of random 4 MiB blocks that no filesystem claims (copied
    raw): p1 holds blocks 0-7 in order, p2 the same blocks shuffled and repeated. Saved with
    5 MiB packs, every frame has a pack of its own and p2 is all references back."""
    work = tmp_path_factory.mktemp("shuffled")
    disk = gpt_disk(work / "disk.img", 80 * MIB, "1:2048:+32M", "2:0:+32M")
    rng = random.Random(11)
    blocks = [rng.randbytes(4 * MIB) for _ in range(8)]
    order = [rng.randrange(8) for _ in range(8)]
    parts = layout(disk)
    with open(disk, "r+b") as f:
        for i in range(8):
            os.pwrite(f.fileno(), blocks[i], parts[1][0] * 512 + i * 4 * MIB)
            os.pwrite(f.fileno(), blocks[order[i]], parts[2][0] * 512 + i * 4 * MIB)
    image = work / "image"
    assert cli.main(["save", "--pack-limit", "5", str(disk), str(image)]) == 0
    return disk, image


def test_references_back_across_packs_restore_byte_identical(
    shuffled: tuple[Path, Path], tmp_path: Path, watched: list[ImageReader]
) -> None:
    disk, image = shuffled
    with ImageReader(image) as reader:
        names = [r.name for r in reader.regions if r.kind == "partition"]
        spots = [(r.pack, r.pack_offset) for n in names for r in reader.records(n) if not r.flags]
        assert len(reader.manifest.packs) >= 8
    assert spots != sorted(spots) and len(set(spots)) < len(spots), spots  # the premise
    target = tmp_path / "target.img"
    jobs.restore(str(image), str(target), jobs.RestoreOptions(verify=True))
    assert sha256(target) == sha256(disk)
    assert_untouched(watched)


def damage_a_p2_frame(image: Path, into: Path) -> tuple[str, ImageError]:
    """Copy ``image`` to ``into`` and flip a payload byte of the frame p2's fifth record uses;
    the pack file and the error read_at gives for that record."""
    shutil.copytree(image, into)
    with ImageReader(into) as reader:
        region = next(r.name for r in reader.regions if r.kind == "partition" and r.name != "p1")
        rec = [r for r in reader.records(region) if not r.flags][4]
        pack = reader.pack_path(rec.pack)
    with open(pack, "r+b") as f:
        at = rec.pack_offset + spec.FRAME_HEADER.size + 100
        os.pwrite(f.fileno(), bytes([os.pread(f.fileno(), 1, at)[0] ^ 1]), at)
    with ImageReader(into) as reader, pytest.raises(ImageError) as read_at_says:
        reader.read_at(region, rec.offset, rec.length)
    return pack, read_at_says.value


def test_a_damaged_frame_is_named_and_with_the_check_nothing_is_written(
    shuffled: tuple[Path, Path], tmp_path: Path
) -> None:
    _, image = shuffled
    damaged = tmp_path / "damaged"
    pack, expected = damage_a_p2_frame(image, damaged)
    where = str(expected).split(": frame at")[1].split(":")[0]  # " pack offset N"
    victim = tmp_path / "victim.img"
    victim.write_bytes(random.Random(2).randbytes(80 * MIB))
    before = sha256(victim)
    with pytest.raises(InputError) as checked:
        jobs.restore(str(damaged), str(victim), jobs.RestoreOptions())
    assert pack in str(checked.value) and f"frame at{where}" in str(checked.value)
    assert "Nothing was written" in str(checked.value)
    assert sha256(victim) == before
    with pytest.raises(ImageError) as unchecked:
        jobs.restore(str(damaged), str(victim), jobs.RestoreOptions(check=False))
    said = str(unchecked.value)
    assert pack in said and f"frame at{where}" in said and "incomplete" in said, said
