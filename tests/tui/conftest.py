"""Fixtures for the TUI tests: the demo disk built once per session (root: its NTFS is filled
through FUSE), an image of it, fresh target files, and loop devices detached after the test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from clonebay.engine import jobs
from clonebay.testdisks import disks
from tests.tui.terminal import Terminal

MIB = 1 << 20


@pytest.fixture(scope="session")
def demo_disk(tmp_path_factory: pytest.TempPathFactory) -> disks.BuiltDisk:
    """The demo's GPT disk (ESP, NTFS, ext4, swap, raw areas) at the QUICK scale."""
    if os.geteuid() != 0:
        pytest.skip("building the NTFS partition needs root (FUSE)")
    work = tmp_path_factory.mktemp("tui-demo")
    return disks.gpt_disk(work / "demo-disk.img", disks.QUICK, work=work)


@pytest.fixture(scope="session")
def demo_image(demo_disk: disks.BuiltDisk, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image of the demo disk, saved by the engine (the restore flow's input)."""
    folder = tmp_path_factory.mktemp("tui-images")
    image = folder / "demo-disk.image"
    jobs.save(str(demo_disk.path), str(image))
    return image


@pytest.fixture
def blank_target(tmp_path: Path, demo_disk: disks.BuiltDisk) -> Path:
    """A fresh, larger, all-zero target disk file."""
    path = tmp_path / "target.img"
    with open(path, "wb") as f:
        f.truncate(demo_disk.size + 64 * MIB)
    return path


@pytest.fixture
def attached_loops() -> Iterator[list[str]]:
    """Loop devices a test attached (detached at the end: only those)."""
    from clonebay.system.run import run as run_tool

    attached: list[str] = []
    yield attached
    for dev in reversed(attached):
        run_tool(["losetup", "-d", dev], check=False)


@pytest.fixture
def terminal_factory() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        term.close()
