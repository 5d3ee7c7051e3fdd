"""Safety audit #18 (first point): a manifest with a valid checksum but odd ``source``, ``table``
or region ``extra`` values. Before, ``restore --grow`` crashed with a TypeError on an unknown key
in the table, ``source.size = "big"`` gave a ValueError traceback, and a negative partition start
went into a plan. Now unknown keys are ignored (docs/format.md §9) and the restore works; a bad
value stops the restore with exit 5, the key path named and the target untouched.

The image is saved by ``clonebay save`` from a small MBR disk (sfdisk, two mkfs.ext4 volumes with
files); its manifest is rewritten with the checksum recomputed, as the audit's remanifest.py did.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import xxhash

from clonebay.imaging.manifest import canonical
from clonebay.imaging.spec import ImageError
from clonebay.testdisks import ext
from tests.diskcheck import extract
from tests.edgedisks import MIB, clonebay, layout, mbr_disk, mkext, sha256

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="restore's target guard needs root")
SECTOR = 512
PARTS = {1: (MIB, 16 * MIB), 2: (17 * MIB, 70 * MIB)}  # p2 is large enough to be grown (64 MiB)
SCRIPT = "start=2048, size=16MiB, type=83\nstart=34816, size=70MiB, type=83\n"
Manifest = dict[str, Any]


def files(root: Path, seed: int) -> Path:
    """A few files of random bytes for one volume."""
    rng = random.Random(seed)
    (root / "dir").mkdir(parents=True)
    for i in range(5):
        (root / ("dir" if i % 2 else ".") / f"f{i}.bin").write_bytes(rng.randbytes(300_000 + i))
    return root


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, dict[str, str]]]:
    """An image saved from a 96 MiB MBR disk, and each partition's files' hashes."""
    work = tmp_path_factory.mktemp("typed")
    disk = mbr_disk(work / "disk.img", 96 * MIB, SCRIPT)
    hashes = {}
    for number, (start, size) in PARTS.items():
        mkext(disk, start, size, root=files(work / f"root{number}", number))
        hashes[number] = ext.file_hashes(extract(disk, start, size, work / f"p{number}.img"))
    proc = clonebay("save", str(disk), str(work / "image"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work / "image", hashes


def remanifest(image: Path, copy: Path, change: Callable[[Manifest], None]) -> Path:
    """A copy of ``image`` whose manifest ``change`` edited, with the checksum recomputed."""
    shutil.copytree(image, copy)
    path = copy / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    data.pop("checksum")
    data["checksum"] = "xxh3-128:" + xxhash.xxh3_128_hexdigest(canonical(data))
    path.write_text(json.dumps(data, indent=2))
    return copy


def target(path: Path, size: int) -> Path:
    """``size`` bytes of old data (random, so that any write shows in the hash)."""
    rng = random.Random(size)
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(rng.randbytes(MIB))
    return path


def unknown_keys(m: Manifest) -> None:
    m["source"]["bogus"] = {"from": "a later clonebay"}
    m["table"]["bogus"] = 1
    m["table"]["partitions"][0]["bogus"] = [1, 2]
    for region in m["regions"]:
        region.setdefault("extra", {})["bogus"] = "x"


def test_unknown_keys_are_ignored_and_grow_works(
    saved: tuple[Path, dict[int, dict[str, str]]], tmp_path: Path
) -> None:
    image, hashes = saved
    copy = remanifest(image, tmp_path / "image", unknown_keys)
    disk = target(tmp_path / "big.img", 160 * MIB)
    proc = clonebay("restore", str(copy), str(disk), "--grow", "proportional", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    grown = layout(disk)
    assert grown[1] == (2048, 16 * MIB // SECTOR) and grown[2][1] * SECTOR > 100 * MIB, grown
    for number, (start, size) in grown.items():
        part = extract(disk, start * SECTOR, size * SECTOR, tmp_path / f"p{number}.img")
        ext.fsck(part)
        assert ext.file_hashes(part) == hashes[number], f"p{number}: files differ"


def set_key(section: str, key: str, value: object, part: int | None = None) -> Callable[..., None]:
    def change(m: Manifest) -> None:
        obj = m[section] if part is None else m[section]["partitions"][part]
        obj[key] = value

    return change


def overlap(m: Manifest) -> None:
    m["table"]["partitions"][1]["start"] = m["table"]["partitions"][0]["start"] + MIB


BAD = {
    "size-big": (set_key("source", "size", "big"), "source.size: must be a non-negative integer"),
    "negative-start": (
        set_key("table", "start", -2048, part=1),
        "table.partitions[1].start: must be a non-negative integer, got -2048",
    ),
    "overlap": (overlap, "table.partitions[1].start: partition 2 [2097152, "),
    "table-sector": (
        set_key("table", "sector_size", 1000),
        "table.sector_size: must be a power of two from 512 to 65536, got 1000",
    ),
    "source-sector": (
        set_key("source", "logical_sector_size", 0),
        "source.logical_sector_size: must be a power of two",
    ),
    "extra-partition": (
        lambda m: m["regions"][1]["extra"].update(partition="one"),
        "regions[1].extra.partition: must be an integer",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_value_is_refused_by_name_before_writing(
    case: str, saved: tuple[Path, dict[int, dict[str, str]]], tmp_path: Path
) -> None:
    change, message = BAD[case]
    copy = remanifest(saved[0], tmp_path / "image", change)
    disk = target(tmp_path / "big.img", 160 * MIB)
    before = sha256(disk)
    proc = clonebay("restore", str(copy), str(disk), "--grow", "proportional", "--yes")
    said = proc.stdout + proc.stderr
    assert proc.returncode == ImageError.exit_code == 5, said
    assert message in said and "manifest.json" in said, said
    assert "Traceback" not in said, said
    assert sha256(disk) == before, "the target was written"
