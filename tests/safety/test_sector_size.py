"""Safety audit #2: a disk laid out in 512-byte sectors cloned onto a 4096-byte-sector disk
(and the reverse) left an unreadable target and reported success. Now the Plan either refuses
before the first write, naming each partition that cannot move and why (NTFS and FAT record
bytes per sector in their boot sectors; ext needs blocks of at least a sector), or, when every
volume is ext with blocks of a multiple of the target's sector, converts: the partition table is
rewritten in the target's sectors and the filesystems are left as they are."""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from clonebay.engine.inspect import inspect_disk
from clonebay.engine.layout.plan import make_plan
from clonebay.engine.layout.table_write import write_table
from clonebay.errors import SafetyError
from clonebay.system.run import output, run
from clonebay.testdisks import ntfs as ntfsdisk
from clonebay.testdisks.files import sparse_file
from tests.edgedisks import MIB, clonebay, gpt_disk, layout, loop, mkext, put, sha256

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")
SIZE = 128 * MIB
HELLO = b"sector sizes\n" * 500

Attach = Callable[..., str]


@pytest.fixture
def attach() -> Iterator[Attach]:
    """Attach files as loop devices with a given logical sector size; detach only those."""
    with ExitStack() as stack:

        def make(image: Path, sector_size: int = 512) -> str:
            return stack.enter_context(loop(image, sector_size=sector_size, partscan=True))

        yield make


def _random_file(path: Path, size: int = SIZE) -> Path:
    rng = random.Random(path.name)
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(rng.randbytes(MIB))
    return path


def _files(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    root.mkdir(exist_ok=True)
    (root / "hello.txt").write_bytes(HELLO)
    return root


def _partscan(dev: str) -> None:
    subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
    run(["partx", "-a", dev])
    run(["udevadm", "settle"])


def _source_512(tmp_path: Path, *, ntfs: bool) -> Path:
    """A 512-byte-sector disk file: p1 ext4 (1 KiB blocks when ``ntfs``, else 4 KiB), p2 NTFS."""
    image = gpt_disk(tmp_path / "src512.img", SIZE, "1:2048:+48M", *(["2:0:0"] if ntfs else []))
    parts = layout(image)
    mkext(
        image, parts[1][0] * 512, parts[1][1] * 512, block=1024 if ntfs else 4096,
        root=_files(tmp_path),
    )  # fmt: skip
    if ntfs:
        fs = ntfsdisk.make_ntfs(tmp_path / "p2.img", parts[2][1] * 512, start_sector=parts[2][0])
        put(image, fs, parts[2][0] * 512)
    return image


def _source_4096(tmp_path: Path, attach: Attach, *, ntfs: bool) -> str:
    """A 4096-byte-sector loop device partitioned by sgdisk: p1 ext4 (4 KiB blocks), p2 NTFS
    made by mkntfs with 4096-byte sectors."""
    dev = attach(sparse_file(tmp_path / "src4k.img", SIZE), 4096)
    specs = ["-n1:256:+48M", *(["-n2:0:0"] if ntfs else [])]
    run(["sgdisk", "-o", *specs, dev])
    _partscan(dev)
    run(["mkfs.ext4", "-F", "-q", "-b", "4096", "-d", str(_files(tmp_path)), f"{dev}p1"])
    if ntfs:
        start = layout(dev)[2][0]
        run(["mkntfs", "-F", "-Q", "-s", "4096", "-c", "4096", "-p", str(start), f"{dev}p2"])
    return dev


def _refused(source: str, target: str, named: list[str], absent: list[str]) -> None:
    target_size = int(output(["blockdev", "--getsize64", target]))
    sector = int(output(["blockdev", "--getss", target]))
    with pytest.raises(SafetyError) as err:
        make_plan(inspect_disk(source), target_size, target_sector_size=sector)
    for words in named:
        assert words in err.value.message
    for words in absent:
        assert words not in err.value.message
    before = sha256(target)
    proc = clonebay("clone", source, target, "--yes")
    said = proc.stdout + proc.stderr
    assert proc.returncode == SafetyError.exit_code, said
    for words in named:
        assert words in said
    assert sha256(target) == before, "the target was written before the refusal"


def test_512_to_4096_refused_with_partitions_named(tmp_path: Path, attach: Attach) -> None:
    source = _source_512(tmp_path, ntfs=True)
    target = attach(_random_file(tmp_path / "t4k.img"), 4096)
    named = [
        "p1 (ext4) has 1024-byte blocks",
        "p2 (ntfs) records 512-byte sectors in its boot sector; the target has 4096-byte sectors",
        "nothing was written",
    ]
    _refused(str(source), target, named, [])


def test_4096_to_512_refused_with_the_ntfs_named(tmp_path: Path, attach: Attach) -> None:
    source = _source_4096(tmp_path, attach, ntfs=True)
    target = attach(_random_file(tmp_path / "t512.img"), 512)
    named = ["p2 (ntfs) records 4096-byte sectors in its boot sector", "nothing was written"]
    _refused(source, target, named, ["p1 ("])  # ext4 with 4 KiB blocks could move


def _check_converted(target: str, sector: int) -> None:
    """The target's table is in its own sectors, sgdisk finds no problem, and p1's ext4 is
    fsck-clean, mounts and holds the file."""
    table = inspect_disk(target).table
    assert table.sector_size == sector and table.partitions[0].start == MIB
    assert "No problems found" in output(["sgdisk", "-v", target])
    _partscan(target)
    run(["e2fsck", "-fn", f"{target}p1"])
    mnt = Path(tempfile.mkdtemp(prefix="clonebay-sectors-"))
    run(["mount", "-o", "ro", f"{target}p1", str(mnt)])
    try:
        assert (mnt / "hello.txt").read_bytes() == HELLO
    finally:
        run(["umount", str(mnt)])
        mnt.rmdir()


def test_plan_for_4096_is_a_table_sfdisk_writes(tmp_path: Path, attach: Attach) -> None:
    source = _source_512(tmp_path, ntfs=False)
    target = attach(sparse_file(tmp_path / "t4k.img", SIZE), 4096)
    plan = make_plan(inspect_disk(str(source)), SIZE, target_sector_size=4096)
    assert plan.convert_sectors
    write_table(target, plan.target_table)
    assert layout(target) == {
        p.number: (p.start // 4096, p.size // 4096) for p in plan.target_table.partitions
    }
    assert "No problems found" in output(["sgdisk", "-v", target])


def test_512_to_4096_converted(tmp_path: Path, attach: Attach) -> None:
    source = _source_512(tmp_path, ntfs=False)
    target = attach(_random_file(tmp_path / "t4k.img"), 4096)
    proc = clonebay("clone", str(source), target, "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_converted(target, 4096)


def test_4096_to_512_converted(tmp_path: Path, attach: Attach) -> None:
    source = _source_4096(tmp_path, attach, ntfs=False)
    target = attach(_random_file(tmp_path / "t512.img"), 512)
    proc = clonebay("clone", source, target, "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_converted(target, 512)
