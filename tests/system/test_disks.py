"""Whole test disks: probe finds every partition's filesystem, and a copy of only the bytes our
maps mark as used (plus the areas outside partitions) is a disk whose every filesystem is clean by
its own fsck and whose every file hashes as recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.engine.inspect import DiskReport, inspect_disk, used_extents
from clonebay.fs import extents
from clonebay.model import CopyMethod
from clonebay.system.run import run
from clonebay.testdisks import disks
from clonebay.testdisks.files import sparse_file
from tests.conftest import needs_root
from tests.diskcheck import assert_disk_matches
from tests.oracles import copy_extents


@needs_root
def test_probe_finds_every_filesystem(built: disks.BuiltDisk) -> None:
    report = inspect_disk(str(built.path))
    assert report.table.kind == built.table
    found = {pr.partition.number: pr.volume for pr in report.partitions if pr.volume}
    for part in built.partitions:
        volume = found[part.number]
        if part.fstype == "empty-msr":
            assert volume.copy is CopyMethod.RAW and volume.fstype == "unknown"
            continue
        assert volume.fstype == part.fstype, part
        if part.fstype == "unknown":
            assert volume.copy is CopyMethod.RAW
        else:
            assert volume.copy is CopyMethod.NATIVE, volume.reason


@needs_root
def test_copy_of_used_extents_is_whole(built: disks.BuiltDisk, tmp_path: Path) -> None:
    report: DiskReport = inspect_disk(str(built.path))
    used = used_extents(report)
    assert extents.total(used) < built.size
    copy = tmp_path / "copy.img"
    copy_extents(built.path, copy, used)
    assert_disk_matches(copy, built, tmp_path)
    # The copy's partition table reads the same as the original's.
    assert inspect_disk(str(copy)).table == report.table


@needs_root
def test_probe_cli_json(built: disks.BuiltDisk, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["probe", "--json", str(built.path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["table"] == built.table
    numbers = [p["number"] for p in data["partitions"] if p["volume"]]
    assert numbers == [p.number for p in built.partitions]
    assert cli.main(["probe", str(built.path)]) == 0
    text = capsys.readouterr().out
    for part in built.partitions:
        if part.fstype not in ("unknown", "empty-msr"):
            assert part.fstype in text


def test_probe_missing_disk_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["probe", str(tmp_path / "absent.img")]) == 5
    assert "absent.img" in capsys.readouterr().err


def test_probe_truncated_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "disk.img"
    sparse_file(path, 64 << 20)
    run(["sfdisk", "-q", str(path)], input_bytes=b"label: dos\n,,83\n")
    os.truncate(path, 40 << 20)
    assert cli.main(["probe", str(path)]) == 0
    out = capsys.readouterr().out
    assert "truncated" in out and "past the end" in out
