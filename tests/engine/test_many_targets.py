"""One read, many targets (engine/target/fanout.py), through the CLI as a technician runs it:
``clone SRC DST1 DST2 DST3`` and ``restore IMAGE DST1 DST2 DST3`` onto targets of different
sizes (loop devices and a new image file), each checked against the built disk's record (fsck
clean, every file's hash, GPT valid); one target failing mid-way (a FUSE file whose writes fail
at one block) while the others complete and verify; the refusals that must come before any
write (the same target twice, the source among the targets, a partition of another target);
and the memory of a clone onto 8 targets."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clonebay.engine import jobs
from clonebay.engine.inspect import inspect_disk
from clonebay.errors import DeviceError, SafetyError
from clonebay.fs import extents
from clonebay.model import Extent
from clonebay.system.run import output, run
from clonebay.testdisks import disks
from clonebay.testdisks.files import sparse_file
from tests.diskcheck import assert_disk_matches, sha256_range
from tests.edgedisks import CLONEBAY, MIB, clonebay, layout, mkext
from tests.edgedisks import gpt_disk as make_gpt
from tests.faultfile import failing

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and FUSE need root"),
]
LIMIT = 300 * MIB  # resident memory of a job, whatever the disk and up to 8 targets

LoopMaker = Callable[[Path], str]


@pytest.fixture
def loop() -> Iterator[LoopMaker]:
    """Attach image files as loop devices (partition nodes scanned); detach only those."""
    attached: list[str] = []

    def attach(image: Path) -> str:
        dev = output(["losetup", "--find", "--show", "--partscan", str(image)]).strip()
        attached.append(dev)
        return dev

    yield attach
    for dev in reversed(attached):
        subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)


@pytest.fixture(scope="module")
def gpt_image(gpt_disk: disks.BuiltDisk, tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("many-image") / "gpt.image"
    jobs.save(str(gpt_disk.path), str(image))
    return image


def digest(path: Path | str) -> str:
    if not os.path.exists(path):
        return "absent"
    if str(path).startswith("/dev/"):
        return sha256_range(Path(path), 0, int(output(["blockdev", "--getsize64", str(path)])))
    return sha256_range(Path(path), 0, Path(path).stat().st_size)


def target_layout(path: Path | str) -> dict[int, tuple[int, int]]:
    return {p.number: (p.start, p.size) for p in inspect_disk(str(path)).table.partitions}


def assert_target(file: Path, device: str, built: disks.BuiltDisk, work: Path) -> None:
    """``file`` (written as ``device``) holds the built disk: fsck, file hashes, valid GPT."""
    assert "No problems found" in output(["sgdisk", "-v", device])
    assert_disk_matches(file, built, work, target_layout(file))


def three_targets(built: disks.BuiltDisk, loop: LoopMaker, work: Path) -> list[tuple[Path, str]]:
    """(backing file, what the job is given): a same-size loop device, a 1.5x loop device that
    held another table, and a new image file."""
    same = sparse_file(work / "same.img", built.size)
    larger = sparse_file(work / "larger.img", built.size * 3 // 2)
    run(["sgdisk", "-n1:1M:+64M", str(larger)])  # an old table: wiped and replaced
    fresh = work / "new.img"
    return [(same, loop(same)), (larger, loop(larger)), (fresh, str(fresh))]


def test_clone_to_three_targets(gpt_disk: disks.BuiltDisk, loop: LoopMaker, tmp_path: Path) -> None:
    before = digest(gpt_disk.path)
    targets = three_targets(gpt_disk, loop, tmp_path)
    proc = clonebay("clone", str(gpt_disk.path), *(t for _, t in targets), "--yes", "--json")
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["ok"] and [t["target"] for t in result["targets"]] == [t for _, t in targets]
    assert all(t["verified_chunks"] > 0 for t in result["targets"]), result
    for file, device in targets:
        assert_target(file, device, gpt_disk, tmp_path)
    assert digest(gpt_disk.path) == before, "the source was written"
    grown = target_layout(targets[1][0])
    assert max(size for _, size in grown.values()) > max(
        size for _, size in target_layout(targets[0][0]).values()
    ), "the larger target did not get its own grown plan"


def test_restore_to_three_targets(
    gpt_disk: disks.BuiltDisk, gpt_image: Path, loop: LoopMaker, tmp_path: Path
) -> None:
    targets = three_targets(gpt_disk, loop, tmp_path)
    argv = ["restore", str(gpt_image), *(t for _, t in targets), "--yes", "--verify"]
    proc = clonebay(*argv, "--grow", "proportional")
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    assert said.count(" ok ") == 3 and "complete and verified" in said, said
    for file, device in targets:
        assert_target(file, device, gpt_disk, tmp_path)


def _used_offset(disk: Path) -> int:
    """A disk byte in the middle of the ext4 partition's used data, away from the region's
    first and last MiB (wiped before the data: the failure must come mid-way)."""
    report = inspect_disk(str(disk))
    part = next(p for p in report.partitions if p.volume and p.volume.fstype == "ext4")
    assert part.volume is not None
    away = Extent(2 * MIB, part.partition.size - 4 * MIB)
    inner = extents.intersect(part.volume.used, (away,))
    largest = max(inner, key=lambda e: e.length)
    middle = largest.start + largest.length // 2
    return part.partition.start + middle // 4096 * 4096


@pytest.mark.parametrize("job", ["clone", "restore"])
def test_one_failing_target_does_not_stop_the_others(
    gpt_disk: disks.BuiltDisk, gpt_image: Path, loop: LoopMaker, tmp_path: Path, job: str
) -> None:
    before = digest(gpt_disk.path)
    bad = _used_offset(gpt_disk.path)
    good = [sparse_file(tmp_path / "a.img", gpt_disk.size), tmp_path / "b.img"]
    backing = sparse_file(tmp_path / "failing.img", gpt_disk.size)
    source = str(gpt_disk.path) if job == "clone" else str(gpt_image)
    with failing(backing, tmp_path / "mnt", bad, 4096, writes=True) as broken:
        argv = [job, source, str(good[0]), str(broken), str(good[1]), "--yes"]
        proc = clonebay(*argv, *(["--verify"] if job == "restore" else []))
    said = proc.stdout + proc.stderr
    assert proc.returncode == DeviceError.exit_code, said
    assert "Traceback" not in said, said
    assert re.search(rf"FAILED +{re.escape(str(broken))}: device error: write error", said), said
    assert f"{broken} is incomplete" in said, said
    assert f"complete and verified: {good[0]}, {good[1]}" in said, said
    assert f"INCOMPLETE, do not use: {broken}" in said, said
    for file in good:
        assert "No problems found" in output(["sgdisk", "-v", str(file)])
        assert_disk_matches(file, gpt_disk, tmp_path, target_layout(file))
    assert digest(gpt_disk.path) == before, "the source was written"


def test_refusals_come_before_any_write(
    gpt_disk: disks.BuiltDisk, gpt_image: Path, loop: LoopMaker, tmp_path: Path
) -> None:
    """The same target twice, the source among the targets (as a loop device over its file),
    a target that is a partition of another target, a target that holds the source: refused,
    exit code 6, and no target changed (a new image file named with them is not created).
    The targets are small: these refusals come before the size is even looked at."""
    source = str(gpt_disk.path)
    source_before = digest(source)
    spare = sparse_file(tmp_path / "spare.img", 256 * MIB)
    with open(spare, "r+b") as f:  # something to lose, so a write would show
        f.write(random.Random(3).randbytes(MIB))
    parted = sparse_file(tmp_path / "parted.img", 256 * MIB)
    run(["sgdisk", "-n1:1M:+100M", "-n2:0:+100M", str(parted)])
    spare_dev, parted_dev = loop(spare), loop(parted)
    subprocess.run(["partx", "-u", parted_dev], capture_output=True, check=False)
    partition = f"{parted_dev}p1"
    assert os.path.exists(partition)
    source_dev = loop(gpt_disk.path)
    fresh = tmp_path / "fresh.img"
    image = str(gpt_image)
    cases = {
        "twice": ("clone", source, str(fresh), spare_dev, spare_dev),
        "twice by two names": ("clone", source, str(spare), spare_dev),
        "the source": ("clone", source, str(fresh), spare_dev, source_dev),
        "a partition of another": ("clone", source, str(fresh), parted_dev, partition),
        "holds the source": ("clone", f"{parted_dev}p2", str(fresh), spare_dev, parted_dev),
        "restore: twice": ("restore", image, spare_dev, str(fresh), str(spare)),
        "restore: a partition of another": ("restore", image, str(fresh), partition, parted_dev),
    }
    watched = [spare, parted]
    before = {str(p): digest(p) for p in watched}
    for name, argv in cases.items():
        proc = clonebay(*argv, "--yes")
        said = proc.stdout + proc.stderr
        assert proc.returncode == SafetyError.exit_code, (name, said)
        assert "nothing was written" in said, (name, said)
        assert not fresh.exists(), name
        assert {str(p): digest(p) for p in watched} == before, name
    assert digest(source) == source_before


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 GiB GPT disk whose ext4 holds 900 MiB of random data (one file and some small)."""
    work = tmp_path_factory.mktemp("many-big")
    root = work / "files"
    root.mkdir()
    rng = random.Random(14)
    with open(root / "big.bin", "wb") as f:
        for _ in range(900 // 16):
            f.write(rng.randbytes(16 * MIB))
    for i in range(200):
        (root / f"small{i}.txt").write_bytes(rng.randbytes(rng.randrange(1, 64 << 10)))
    disk = make_gpt(work / "big.img", 1024 * MIB, "1:2048:0")
    start, sectors = layout(disk)[1]
    mkext(disk, start * 512, sectors * 512, root=root)
    (root / "big.bin").unlink()
    return disk


def peak_rss(argv: list[str]) -> tuple[int, str]:
    """Run the CLI in a child of a fresh Python and return its peak resident memory (bytes:
    RUSAGE_CHILDREN's ru_maxrss, the largest of the CLI and the tools it ran) and its output."""
    probe = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(p.stdout + p.stderr)\n"
    )
    env = {**os.environ, "LC_ALL": "C"}
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(CLONEBAY), *argv],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    first, _, said = proc.stdout.partition("\n")
    code, kib = (int(x) for x in first.split())
    assert code == 0, said
    return kib * 1024, said


@pytest.mark.slow
@pytest.mark.parametrize("count", [1, 8])
def test_memory_stays_bounded(big_source: Path, tmp_path: Path, count: int) -> None:
    targets = [str(tmp_path / f"t{i}.img") for i in range(count)]
    peak, said = peak_rss(["clone", str(big_source), *targets, "--yes"])
    print(f"peak RSS, clone onto {count} target(s): {peak / MIB:.0f} MiB")
    assert peak < LIMIT, said
    for target in targets:
        assert "No problems found" in output(["sgdisk", "-v", target])
        Path(target).unlink()
