"""Fixtures for browsing: the standard test disks saved once as images (through the CLI), and
the truth to compare against (the source partitions, cut out of the built disk files)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.testdisks import disks
from tests.diskcheck import extract

Saved = tuple[disks.BuiltDisk, Path]


@pytest.fixture(scope="session")
def saved_images(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Saved]:
    """Each standard disk saved once as an image directory."""
    out: dict[str, Saved] = {}
    for kind in ("gpt", "mbr"):
        built: disks.BuiltDisk = request.getfixturevalue(f"{kind}_disk")
        image = tmp_path_factory.mktemp(f"browse-{kind}") / "image"
        assert cli.main(["save", "--pack-limit", "64", str(built.path), str(image)]) == 0
        out[kind] = (built, image)
    return out


@pytest.fixture(scope="session")
def source_partitions(
    saved_images: dict[str, Saved], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, int], Path]:
    """Every filesystem partition of the source disks as a file of its own (sparse)."""
    work = tmp_path_factory.mktemp("browse-sources")
    out = {}
    for kind, (built, _) in saved_images.items():
        for part in built.partitions:
            if part.tree is not None:
                out[(kind, part.number)] = extract(
                    built.path, part.start, part.size, work / f"{kind}-p{part.number}.img"
                )
    return out


@pytest.fixture
def image_copy(tmp_path: Path) -> object:
    """Copy an image directory (hard links would share the packs an edit must not touch)."""

    def copy(image: Path) -> Path:
        target = tmp_path / "image-copy"
        shutil.copytree(image, target)
        return target

    return copy


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="FUSE, loop devices and mounts")
