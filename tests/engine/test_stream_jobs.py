"""The stream form end to end on the standard test disks: ``clonebay save DISK -`` piped into
``clonebay restore - TARGET`` as two real processes, restores from stream files over old data,
conversion both ways byte for byte, and refusals: a truncated stream, a flipped bit, a target
that is too small, more data outside the partitions than a stream restore holds in memory.
Every restored disk is checked by each filesystem's fsck and every file's hash."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.engine import jobs
from clonebay.engine.inspect import inspect_disk
from clonebay.errors import InputError, TargetTooSmallError, VerifyError
from clonebay.imaging import stream
from clonebay.imaging.reader import ImageReader
from clonebay.system.run import run
from clonebay.testdisks import disks, ext
from clonebay.testdisks.files import sparse_file
from tests.diskcheck import assert_disk_matches, sha256_range

MIB = 1 << 20
CLONEBAY = [sys.executable, "-m", "clonebay"]


def save_stream(source: Path, path: Path, partition: int | None = None) -> Path:
    with open(path, "wb") as out:
        jobs.save(str(source), out, jobs.SaveOptions(partition=partition))
    return path


@pytest.fixture(scope="module")
def streams(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[disks.BuiltDisk, Path]]:
    """Each standard disk saved once as a stream file."""
    out = {}
    for kind in ("gpt", "mbr"):
        built: disks.BuiltDisk = request.getfixturevalue(f"{kind}_disk")
        out[kind] = (built, save_stream(built.path, tmp_path_factory.mktemp(kind) / "s.cbs"))
    return out


def old_disk(path: Path, size: int) -> Path:
    """A target full of old data with a GPT of its own (primary and backup)."""
    rng = random.Random(5)
    with open(path, "wb") as f:
        for _ in range(-(-size // (16 * MIB))):
            f.write(rng.randbytes(16 * MIB))
        f.truncate(size)
    run(["sgdisk", "-o", "-n1:0:0", str(path)])
    return path


def test_save_piped_into_restore(gpt_disk: disks.BuiltDisk, tmp_path: Path) -> None:
    """Two processes and a pipe: the stream is restored as it arrives, then verified."""
    target = tmp_path / "target.img"
    before = sha256_range(gpt_disk.path, 0, gpt_disk.size)
    save = subprocess.Popen(
        [*CLONEBAY, "save", "--json", str(gpt_disk.path), "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert save.stdout is not None
    restore = subprocess.run(
        [*CLONEBAY, "restore", "--yes", "--verify", "-", str(target)],
        stdin=save.stdout,
        capture_output=True,
        check=False,
    )
    save.stdout.close()
    save_err = save.stderr.read().decode() if save.stderr else ""
    assert save.wait() == 0, save_err
    assert restore.returncode == 0, restore.stderr.decode()
    result = json.loads(save_err.strip().splitlines()[-1])  # the result went to stderr
    assert result["event"] == "result" and result["copied_bytes"] > 100 * MIB
    assert "verified" in restore.stdout.decode()
    assert sha256_range(gpt_disk.path, 0, gpt_disk.size) == before, "save wrote to its source"
    assert target.stat().st_size == gpt_disk.size
    assert_disk_matches(target, gpt_disk, tmp_path)
    assert inspect_disk(str(target)).table == inspect_disk(str(gpt_disk.path)).table


def test_stream_file_over_a_larger_disk_of_old_data(
    streams: dict[str, tuple[disks.BuiltDisk, Path]], tmp_path: Path
) -> None:
    built, path = streams["mbr"]
    target = old_disk(tmp_path / "bigger.img", built.size + 200 * MIB)
    warnings = jobs.restore(str(path), str(target), jobs.RestoreOptions(verify=True))
    assert warnings == []
    assert_disk_matches(target, built, tmp_path)
    original, restored = inspect_disk(str(built.path)).table, inspect_disk(str(target)).table
    assert restored.partitions == original.partitions and restored.disk_id == original.disk_id
    with open(target, "rb") as f:  # the old backup GPT at the end was wiped
        f.seek(target.stat().st_size - 512)
        assert f.read(512) == bytes(512)


def test_convert_both_ways_is_lossless(
    streams: dict[str, tuple[disks.BuiltDisk, Path]], tmp_path: Path
) -> None:
    _, path = streams["gpt"]
    directory = tmp_path / "dir"
    assert cli.main(["convert", str(path), str(directory)]) == 0
    assert jobs.verify_image(str(directory)).ok
    again = tmp_path / "again.cbs"
    assert cli.main(["convert", str(directory), str(again)]) == 0
    assert again.read_bytes() == path.read_bytes()  # stream -> directory -> stream
    back = tmp_path / "back"
    assert cli.main(["convert", str(again), str(back)]) == 0
    for sub in ("manifest.json", "packs", "index"):  # directory -> stream -> directory
        for file in sorted((directory / sub).glob("*")) if sub != "manifest.json" else [None]:
            rel = sub if file is None else f"{sub}/{file.name}"
            assert (back / rel).read_bytes() == (directory / rel).read_bytes(), rel
    with ImageReader(directory) as reader:
        assert len(reader.manifest.packs) >= 1 and reader.manifest.totals.frames > 50
    assert cli.main(["convert", str(directory), str(again)]) == 6  # exists: refused
    assert jobs.image_info(str(path)) | {"image": ""} == jobs.image_info(str(directory)) | {
        "image": ""
    }


def test_truncated_stream_stops_and_leaves_no_table(
    streams: dict[str, tuple[disks.BuiltDisk, Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    built, path = streams["gpt"]
    cut = tmp_path / "cut.cbs"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) * 3 // 5])
    target = old_disk(tmp_path / "t.img", built.size)
    assert cli.main(["restore", "--yes", str(cut), str(target)]) == InputError.exit_code
    err = capsys.readouterr().err
    assert f"byte {len(data) * 3 // 5}" in err and "incomplete" in err, err
    assert "last data received: region p" in err and str(target) in err, err
    with open(target, "rb") as f:  # plainly incomplete: neither primary nor backup table
        assert f.read(MIB) == bytes(MIB)
        f.seek(built.size - MIB)
        assert f.read(MIB) == bytes(MIB)
    assert cli.main(["verify", str(cut)]) == VerifyError.exit_code


def test_flipped_bit_in_a_frame_is_named(
    streams: dict[str, tuple[disks.BuiltDisk, Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, path = streams["gpt"]
    data = bytearray(path.read_bytes())
    pos = stream.STREAM_HEADER.size
    while True:  # the first stored (incompressible) frame of a partition: the random ones
        head = stream.parse_record_header(bytes(data[pos : pos + 32]), "test")
        if head.kind == stream.REC_FRAME and head.region > 0 and data[pos + 36] == 0:
            break
        pos += 32 + head.body_length
    data[pos + 64 + 1000] ^= 0x20
    bad = tmp_path / "bad.cbs"
    bad.write_bytes(data)
    assert cli.main(["verify", str(bad)]) == VerifyError.exit_code
    out = capsys.readouterr().out
    assert f"byte {pos}: FRAME record" in out and f"offset {head.offset}" in out, out
    target = tmp_path / "t.img"
    assert cli.main(["restore", "--yes", str(bad), str(target)]) == InputError.exit_code
    err = capsys.readouterr().err
    assert "FRAME record (region p" in err and "xxh3-128" in err and "incomplete" in err, err


def test_too_small_target_is_refused_before_writing(
    streams: dict[str, tuple[disks.BuiltDisk, Path]], tmp_path: Path
) -> None:
    built, path = streams["gpt"]
    target = tmp_path / "small.img"
    with open(target, "wb") as f:
        f.write(b"old data" * 1000)
        f.truncate(built.size - MIB)
    before = sha256_range(target, 0, built.size - MIB)
    with open(path, "rb") as src:
        proc = subprocess.run(
            [*CLONEBAY, "restore", "--yes", "-", str(target)],
            stdin=src,
            capture_output=True,
            check=False,
        )
    assert proc.returncode == TargetTooSmallError.exit_code, proc.stderr.decode()
    assert b"target holds" in proc.stderr
    assert sha256_range(target, 0, built.size - MIB) == before


def test_single_partition_stream_and_dry_run(
    mbr_disk: disks.BuiltDisk, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part = next(p for p in mbr_disk.partitions if p.fstype == "ext3")
    path = save_stream(mbr_disk.path, tmp_path / "p.cbs", partition=part.number)
    target = tmp_path / "part.img"
    assert cli.main(["restore", "--dry-run", str(path), str(target)]) == 0
    assert f"p{part.number}" in capsys.readouterr().out and not target.exists()
    assert cli.main(["restore", "--yes", "--verify", str(path), str(target)]) == 0
    assert target.stat().st_size == part.size
    ext.fsck(target)
    assert part.tree is not None
    assert ext.file_hashes(target) == part.tree.files


def test_much_data_outside_partitions_streams_with_only_the_tables_held(tmp_path: Path) -> None:
    """80 MiB of old data in unpartitioned space: a stream restore holds back only where tables
    live (first and last MiB, the first sectors of an area), writes the rest as it arrives, and
    gives the same disk as a restore from the directory image."""
    disk = sparse_file(tmp_path / "disk.img", 160 * MIB)
    run(["sgdisk", "-n1:0:+32M", "-t1:8300", str(disk)])
    rng = random.Random(9)
    with open(disk, "r+b") as f:
        f.seek(40 * MIB)
        f.write(rng.randbytes(80 * MIB))
        f.seek(2 * MIB)
        f.write(rng.randbytes(4 * MIB))  # the partition: unknown data, copied raw
    path = save_stream(disk, tmp_path / "s.cbs")
    want = sha256_range(disk, 0, 160 * MIB)
    target = tmp_path / "t.img"
    jobs.restore(str(path), str(target), jobs.RestoreOptions(verify=True))
    assert sha256_range(target, 0, disk.stat().st_size) == want
    directory = tmp_path / "d"
    jobs.convert(str(path), str(directory))
    target.unlink()
    jobs.restore(str(directory), str(target), jobs.RestoreOptions(verify=True))
    assert sha256_range(target, 0, disk.stat().st_size) == want


def test_stream_records_match_a_directory_save(
    streams: dict[str, tuple[disks.BuiltDisk, Path]], tmp_path: Path
) -> None:
    """A stream save and a directory save of the same disk hold the same index records."""
    built, path = streams["mbr"]
    directory = tmp_path / "img"
    jobs.save(str(built.path), str(directory))
    converted = tmp_path / "conv"
    jobs.convert(str(path), str(converted))
    with ImageReader(directory) as a, ImageReader(converted) as b:
        assert [r.name for r in a.regions] == [r.name for r in b.regions]
        for region in a.regions:
            assert a.records(region.name) == b.records(region.name), region.name
            assert region.stats == b.region(region.name).stats
        assert [p.size for p in a.manifest.packs] == [p.size for p in b.manifest.packs]


def test_stream_is_not_written_to_a_terminal(tmp_path: Path) -> None:
    """Binary data on a terminal is useless and can garble it: refused before reading anything."""
    controller, terminal = os.openpty()
    try:
        proc = subprocess.run(
            [*CLONEBAY, "save", str(tmp_path / "no-such-disk"), "-"],
            stdout=terminal,
            stderr=subprocess.PIPE,
            check=False,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode == 2 and b"terminal" in proc.stderr
