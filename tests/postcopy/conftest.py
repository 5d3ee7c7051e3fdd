"""Fixtures of the post-copy tests: the real Debian system disk of debian_disk.py (built once per
machine, ~2 min; then a sparse copy per use, ~2 s)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.postcopy.debian_disk import DebianDisk, build_debian_disk, missing_packages


@pytest.fixture(scope="session")
def debian_copy() -> Callable[[Path], DebianDisk]:
    """Makes a fresh copy of the Debian disk at a path (to boot, to clone from or onto): each
    copy is the disk as built, with the same identity."""
    if os.geteuid() != 0:
        pytest.skip("building the Debian disk needs root (loop devices, mount, chroot)")
    absent = missing_packages()
    if absent:
        pytest.skip(f"the Debian disk needs: apt-get install {' '.join(absent)} (make apt)")
    return build_debian_disk


@pytest.fixture(scope="session")
def debian_disk(
    debian_copy: Callable[[Path], DebianDisk], tmp_path_factory: pytest.TempPathFactory
) -> DebianDisk:
    """One copy of the Debian disk for the session, as a clone's source: never boot it or write
    to it (booting changes it: boot a copy from ``debian_copy``)."""
    return debian_copy(tmp_path_factory.mktemp("debian-disk") / "source.img")
