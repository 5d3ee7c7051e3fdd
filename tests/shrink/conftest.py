"""Disks for the shrink tests: the factory's GPT and MBR disks with room to spare (partitions a
few times larger than their data, as on a laptop disk that is 30 % used), each saved once as a
directory image, and a disk whose NTFS and ext4 were churned until their files are scattered
to the ends of the volumes (see churn.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.testdisks import disks
from tests.diskcheck import sha256_range
from tests.shrink import churn

MIB = 1 << 20

ROOMY = disks.Scale(
    ntfs=600 * MIB,
    ext=900 * MIB,
    ntfs_files=1_500,
    pagefile=16 * MIB,
    usr_files=3_000,
    big_file=48 * MIB,
    mbr_ntfs=400 * MIB,
    mbr_ext3=400 * MIB,
    small_files=200,
)


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("building NTFS volumes needs root (FUSE)")


@pytest.fixture(scope="session")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[disks.BuiltDisk, str]]:
    """The GPT and MBR factory disks at the ROOMY scale, with the sha256 of each."""
    _needs_root()
    out = {}
    for kind, build in (("gpt", disks.gpt_disk), ("mbr", disks.mbr_disk)):
        work = tmp_path_factory.mktemp(f"roomy-{kind}")
        built = build(work / "disk.img", ROOMY, work=work)
        out[kind] = (built, sha256_range(built.path, 0, built.size))
    return out


@pytest.fixture(scope="session")
def roomy_images(
    roomy: dict[str, tuple[disks.BuiltDisk, str]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Each roomy disk saved once as a directory image."""
    out = {}
    for kind, (built, _) in roomy.items():
        image = tmp_path_factory.mktemp(f"roomy-img-{kind}") / "disk.image"
        assert cli.main(["save", str(built.path), str(image)]) == 0
        out[kind] = image
    return out


@pytest.fixture(scope="session")
def churned(tmp_path_factory: pytest.TempPathFactory) -> churn.ChurnedDisk:
    _needs_root()
    work = tmp_path_factory.mktemp("churned")
    return churn.churned_disk(work / "disk.img", work)
