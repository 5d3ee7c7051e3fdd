"""One small standard disk and its image, built once for every multicast test."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from clonebay.engine import jobs
from clonebay.testdisks import disks
from tests.diskcheck import sha256_range


@dataclass(frozen=True)
class SentImage:
    built: disks.BuiltDisk
    image: Path
    sha256: str  # of the whole source disk: what every receiver must end up with


@pytest.fixture(scope="session")
def sent_image(tmp_path_factory: pytest.TempPathFactory) -> SentImage:
    if os.geteuid() != 0:
        pytest.skip("network namespaces and the NTFS test partition need root")
    work = tmp_path_factory.mktemp("mcast")
    built = disks.gpt_disk(work / "disk.img", disks.QUICK, work=work)
    image = work / "image"
    jobs.save(str(built.path), str(image))
    return SentImage(built, image, sha256_range(built.path, 0, built.size))
