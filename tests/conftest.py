"""Shared fixtures: the standard test disks are built once per test session (they take a
minute: real mkfs runs, ntfs-3g over FUSE, tens of thousands of files)."""

from __future__ import annotations

import os

import pytest

from clonebay.testdisks import disks

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="NTFS images are filled through FUSE")


@pytest.fixture(scope="session")
def gpt_disk(tmp_path_factory: pytest.TempPathFactory) -> disks.BuiltDisk:
    if os.geteuid() != 0:
        pytest.skip("building the NTFS partition needs root (FUSE)")
    work = tmp_path_factory.mktemp("gpt")
    return disks.gpt_disk(work / "disk.img", disks.TEST, work=work)


@pytest.fixture(scope="session")
def mbr_disk(tmp_path_factory: pytest.TempPathFactory) -> disks.BuiltDisk:
    if os.geteuid() != 0:
        pytest.skip("building the NTFS partition needs root (FUSE)")
    work = tmp_path_factory.mktemp("mbr")
    return disks.mbr_disk(work / "disk.img", disks.TEST, work=work)


@pytest.fixture(params=["gpt", "mbr"])
def built(request: pytest.FixtureRequest) -> disks.BuiltDisk:
    """Each standard test disk in turn."""
    disk: disks.BuiltDisk = request.getfixturevalue(f"{request.param}_disk")
    return disk
