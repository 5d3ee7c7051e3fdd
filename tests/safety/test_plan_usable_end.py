"""Safety audit #11: a GPT disk whose last partition ends at the last usable LBA (sgdisk's
default end) clones onto an identical disk. The old plan subtracted 34 sectors for a tail of 33
and refused: "the target holds 64.0 MiB; the source's partitions need 64.0 MiB"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clonebay.engine.inspect import inspect_disk
from clonebay.engine.layout.plan import make_plan
from clonebay.system.run import output, run
from clonebay.testdisks.files import sparse_file
from tests.diskcheck import extract
from tests.edgedisks import MIB, clonebay, gpt_disk, layout, mkext

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the clone guard needs root")
SECTOR = 512


@pytest.fixture
def full(tmp_path: Path) -> Path:
    image = gpt_disk(tmp_path / "full.img", 64 * MIB, "1:2048:0")
    start, size = layout(image)[1]
    assert start + size - 1 == 131038  # the last usable LBA of a 64 MiB GPT disk
    files = tmp_path / "files"
    files.mkdir()
    (files / "hello.txt").write_bytes(b"usable end\n" * 1000)
    mkext(image, start * SECTOR, size * SECTOR, root=files)
    return image


def test_plan_accepts_an_identical_disk(full: Path) -> None:
    plan = make_plan(inspect_disk(str(full)), 64 * MIB)
    assert plan.same_layout


def test_clone_onto_an_identical_disk(full: Path, tmp_path: Path) -> None:
    target = sparse_file(tmp_path / "full-t.img", 64 * MIB)
    proc = clonebay("clone", str(full), str(target), "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No problems found" in output(["sgdisk", "-v", str(target)])
    assert layout(target) == layout(full)
    start, size = layout(target)[1]
    part = extract(target, start * SECTOR, size * SECTOR, tmp_path / "p1.img")
    run(["e2fsck", "-fn", str(part)])
    listed = output(["debugfs", "-R", "cat /hello.txt", str(part)])
    assert listed == "usable end\n" * 1000
