"""Shared fixtures: the standard test disks are built once per test session (they take a
minute: real mkfs runs, ntfs-3g over FUSE, tens of thousands of files)."""

from __future__ import annotations

import os

import pytest

from clonebay.testdisks import disks

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="NTFS images are filled through FUSE")

# The whole suite keeps up to ~12 GiB of disk images in its temporary folder at a time (the
# folders of passed tests are deleted as it goes: tmp_path_retention_policy in pyproject.toml),
# and the live ISO's build takes ~4 GiB more under /var/tmp.
NEEDS_FREE = 20 << 30


def pytest_sessionstart(session: pytest.Session) -> None:
    """Say up front when the disk is too full for the suite, instead of a wall of errors."""
    del session
    for folder in ("/tmp", "/var/tmp"):
        info = os.statvfs(folder)
        free = info.f_bavail * info.f_frsize
        if free < NEEDS_FREE:
            print(
                f"\nWARNING: only {free >> 30} GiB free under {folder}; the suite needs about"
                f" {NEEDS_FREE >> 30} GiB (old runs in /tmp/pytest-of-*, ISO builds in"
                " /var/tmp/clonebay-iso*): tests may fail with 'No space left on device'\n"
            )


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
