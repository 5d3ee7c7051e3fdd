"""Round trips of the standard test disks through an image: save -> restore into a file of the
same size, into a larger one, and over a target full of old data; every filesystem is clean and
every file hashes as recorded; the partition table is the same; the source is never written."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.engine import jobs
from clonebay.engine.inspect import inspect_disk
from clonebay.errors import TargetTooSmallError, VerifyError
from clonebay.imaging.reader import ImageReader
from clonebay.system.run import output, run
from clonebay.testdisks import disks, ext, fat
from clonebay.testdisks.files import sparse_file
from tests.diskcheck import assert_disk_matches, assert_grown_disk, sha256_range

MIB = 1 << 20


@pytest.fixture(scope="module")
def saved(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[disks.BuiltDisk, Path]]:
    """Each standard disk saved once (through the CLI, with JSON progress)."""
    out: dict[str, tuple[disks.BuiltDisk, Path]] = {}
    for kind in ("gpt", "mbr"):
        built: disks.BuiltDisk = request.getfixturevalue(f"{kind}_disk")
        image = tmp_path_factory.mktemp(f"img-{kind}") / "image"
        before = sha256_range(built.path, 0, built.size)
        assert cli.main(["save", "--json", "--pack-limit", "64", str(built.path), str(image)]) == 0
        assert sha256_range(built.path, 0, built.size) == before, "save wrote to its source"
        out[kind] = (built, image)
    return out


@pytest.mark.parametrize("kind", ["gpt", "mbr"])
def test_restore_same_size(
    saved: dict[str, tuple[disks.BuiltDisk, Path]], kind: str, tmp_path: Path
) -> None:
    built, image = saved[kind]
    target = tmp_path / "target.img"
    assert cli.main(["restore", "--yes", "--verify", str(image), str(target)]) == 0
    assert target.stat().st_size == built.size
    assert_disk_matches(target, built, tmp_path)
    assert inspect_disk(str(target)).table == inspect_disk(str(built.path)).table


@pytest.mark.parametrize("kind", ["gpt", "mbr"])
def test_restore_onto_larger_target_full_of_old_data(
    saved: dict[str, tuple[disks.BuiltDisk, Path]], kind: str, tmp_path: Path
) -> None:
    built, image = saved[kind]
    target = tmp_path / "bigger.img"
    size = built.size + 300 * MIB
    rng = random.Random(3)
    with open(target, "wb") as f:  # an old disk: random data everywhere, an old GPT at the end
        for _ in range(-(-size // (16 * MIB))):
            f.write(rng.randbytes(16 * MIB))
        f.truncate(size)
    run(["sgdisk", "-o", "-n1:0:0", str(target)])
    jobs.restore(str(image), str(target), jobs.RestoreOptions(verify=True))
    assert target.stat().st_size == size
    assert_disk_matches(target, built, tmp_path)
    original = inspect_disk(str(built.path)).table
    restored = inspect_disk(str(target)).table
    assert restored.partitions == original.partitions
    assert restored.disk_id == original.disk_id
    if kind == "gpt":  # backup header moved to the new end, and the table checks clean
        assert "No problems found" in output(["sgdisk", "-v", str(target)])


def test_target_too_small_is_refused_before_writing(
    saved: dict[str, tuple[disks.BuiltDisk, Path]], tmp_path: Path
) -> None:
    built, image = saved["gpt"]
    target = tmp_path / "small.img"
    size = built.size // 3  # too small for the data even shrunk (tests/shrink: what fits)
    with open(target, "wb") as f:
        f.write(b"old data" * 1000)
        f.truncate(size)
    before = sha256_range(target, 0, size)
    with pytest.raises(TargetTooSmallError, match=r"target holds .* even shrunk, .* needs"):
        jobs.restore(str(image), str(target))
    assert sha256_range(target, 0, size) == before
    assert cli.main(["restore", "--yes", str(image), str(target)]) == 7


def test_verify_finds_a_changed_target(
    saved: dict[str, tuple[disks.BuiltDisk, Path]], tmp_path: Path
) -> None:
    _, image = saved["mbr"]
    target = tmp_path / "target.img"
    jobs.restore(str(image), str(target))
    assert jobs.verify_target(str(image), str(target)) == []
    with ImageReader(image) as reader:
        rec = next(r for r in reader.records("p5") if not r.flags)
        at = reader.region("p5").disk_offset + rec.offset + 100
    with open(target, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x40]))
    problems = jobs.verify_target(str(image), str(target))
    assert len(problems) == 1 and "p5" in problems[0]


def test_single_partition_round_trip(
    saved: dict[str, tuple[disks.BuiltDisk, Path]], tmp_path: Path
) -> None:
    built, _ = saved["mbr"]
    part = next(p for p in built.partitions if p.fstype == "ext3")
    image = tmp_path / "p.img.d"
    assert cli.main(["save", "--partition", str(part.number), str(built.path), str(image)]) == 0
    target = tmp_path / "part.img"
    assert cli.main(["restore", "--yes", "--verify", str(image), str(target)]) == 0
    assert target.stat().st_size == part.size
    ext.fsck(target)
    assert part.tree is not None
    assert ext.file_hashes(target) == part.tree.files


def test_damaged_frame_stops_restore_and_says_target_incomplete(
    saved: dict[str, tuple[disks.BuiltDisk, Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, image = saved["gpt"]
    copy = tmp_path / "damaged"
    shutil.copytree(image, copy)
    with ImageReader(copy) as reader:
        rec = next(r for r in reader.records("p5") if not r.flags and r.stored_length > 1000)
        pack = copy / "packs" / reader.manifest.packs[rec.pack].name
    with open(pack, "r+b") as f:
        f.seek(rec.pack_offset + 32 + 500)
        byte = f.read(1)
        f.seek(rec.pack_offset + 32 + 500)
        f.write(bytes([byte[0] ^ 1]))
    assert cli.main(["verify", str(copy)]) == VerifyError.exit_code
    assert "p5" in capsys.readouterr().out
    target = tmp_path / "t.img"
    assert cli.main(["restore", "--yes", str(copy), str(target)]) == 5
    err = capsys.readouterr().err
    assert "p5" in err and "incomplete" in err and str(pack) in err


def test_info_and_dry_runs(
    saved: dict[str, tuple[disks.BuiltDisk, Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    built, image = saved["gpt"]
    assert cli.main(["info", "--json", str(image)]) == 0
    info = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in info["regions"]]
    assert [n for n in names if n.startswith("p")] == [f"p{p.number}" for p in built.partitions]
    assert info["table"]["kind"] == "gpt"
    target = tmp_path / "never.img"
    assert cli.main(["restore", "--dry-run", str(image), str(target)]) == 0
    assert not target.exists()
    plan = capsys.readouterr().out
    assert plan.index("p2") < plan.index("area0")  # partition table written last
    assert cli.main(["save", "--dry-run", "--json", str(built.path), str(tmp_path / "x")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bytes_to_copy"] < built.size
    assert not (tmp_path / "x").exists()


def test_save_refuses_existing_image(
    saved: dict[str, tuple[disks.BuiltDisk, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    built, image = saved["mbr"]
    assert cli.main(["save", str(built.path), str(image)]) != 0
    assert str(image) in capsys.readouterr().err
    assert os.path.exists(image / "manifest.json")


def test_restore_region_of_whole_disk_image_into_file(
    saved: dict[str, tuple[disks.BuiltDisk, Path]], tmp_path: Path
) -> None:
    built, image = saved["gpt"]
    part = next(p for p in built.partitions if p.fstype == "fat32")
    target = tmp_path / "esp.img"
    sparse_file(target, part.size)
    jobs.restore(str(image), str(target), jobs.RestoreOptions(region=f"p{part.number}"))
    fat.fsck(target)
    assert part.tree is not None
    assert fat.file_hashes(target) == part.tree.files


@pytest.mark.skipif(os.geteuid() != 0, reason="growing filesystems uses loop devices")
@pytest.mark.parametrize(("kind", "form"), [("gpt", "directory"), ("mbr", "stream")])
def test_restore_grows_onto_a_larger_disk(
    saved: dict[str, tuple[disks.BuiltDisk, Path]],
    kind: str,
    form: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    built, image = saved[kind]
    if form == "stream":
        stream = tmp_path / "disk.cbs"
        assert cli.main(["convert", str(image), str(stream)]) == 0
        image = stream
    target = sparse_file(tmp_path / "double.img", built.size * 2)
    capsys.readouterr()
    grow = ["--grow", "proportional"]
    assert cli.main(["restore", "--dry-run", "--json", *grow, str(image), str(target)]) == 0
    planned = json.loads(capsys.readouterr().out)["regions"]
    assert cli.main(["restore", "--yes", "--verify", *grow, str(image), str(target)]) == 0
    layout = assert_grown_disk(target, built, tmp_path)
    # the dry run said where every partition would go and at what size
    plan = {r["name"]: (r["offset"], r["size"]) for r in planned if r["name"].startswith("p")}
    assert plan == {f"p{n}": place for n, place in layout.items() if f"p{n}" in plan}
    assert any("grows from" in r["note"] for r in planned)
