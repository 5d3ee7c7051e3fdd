"""Listing the root of a multi-GiB compressed image reads a handful of frames, not the image:
a 6 GiB ext4 volume holding a 1 GiB file, saved, then ``ls IMAGE:p1 /``. Counted through the
view's reader statistics, never by a clock (the time is only printed)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.system.run import run
from clonebay.testdisks.files import sparse_copy, sparse_file
from tests.browse.conftest import needs_root

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

GIB, MIB = 1 << 30, 1 << 20
HANDFUL = 8  # frames: superblock and descriptors, inode table, root folder block, and slack


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("big")
    tree = work / "tree"
    (tree / "data").mkdir(parents=True)
    rng = random.Random(11)
    with open(tree / "data" / "big.bin", "wb") as f:
        for _ in range(GIB // (16 * MIB)):
            f.write(rng.randbytes(16 * MIB))
    for i in range(20):
        (tree / f"note{i:02d}.txt").write_text(f"note {i}\n" * 100)
    volume = sparse_file(work / "fs.img", 6 * GIB)
    run(["mkfs.ext4", "-q", "-F", "-L", "big", "-d", str(tree), str(volume)])
    (tree / "data" / "big.bin").unlink()
    disk = sparse_file(work / "disk.img", 6 * GIB + 2 * MIB)
    run(["sgdisk", "-n1:2048:+6G", "-t1:8300", str(disk)])
    sparse_copy(volume, disk, MIB)
    volume.unlink()
    image = work / "image"
    assert cli.main(["save", str(disk), str(image)]) == 0
    disk.unlink()
    return image


def test_listing_the_root_reads_a_handful_of_frames(
    big_image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads((big_image / "manifest.json").read_text())
    region = next(r for r in manifest["regions"] if r["name"] == "p1")
    assert region["size"] >= 6 * GIB and region["stats"]["raw_bytes"] >= GIB
    capsys.readouterr()
    started = time.monotonic()
    assert cli.main(["ls", "--json", f"{big_image}:p1", "/"]) == 0
    seconds = time.monotonic() - started
    result = json.loads(capsys.readouterr().out)
    names = {e["path"] for e in result["entries"]}
    assert names == {"data", "lost+found"} | {f"note{i:02d}.txt" for i in range(20)}
    stats = result["reader"]
    print(f"ls of a 6 GiB image's root: {stats} in {seconds:.2f} s")
    assert stats["frames_decoded"] <= HANDFUL
    assert stats["stored_bytes_read"] <= HANDFUL * manifest["chunk_size"] + HANDFUL * 64
