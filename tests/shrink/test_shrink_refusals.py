"""What a shrink refuses, before anything is written (issue 16): a target too small for the
data even shrunk (the refusal names each partition's need and the shortfall), a stream onto a
smaller disk (it cannot be resized as it arrives), a hibernated or dirty volume that would
have to shrink (with the way out), a scratch folder too small for the overlays; and the
hostile tries: the target swapped with the source, a view that dies under its resizer."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.browse.procs import mounted_at
from clonebay.engine import CloneOptions, clone, clone_plan, jobs
from clonebay.engine.inspect import inspect_disk
from clonebay.engine.shrink import resize
from clonebay.errors import ClonebayError, SafetyError, TargetTooSmallError, UsageError
from clonebay.system.run import run
from clonebay.testdisks import disks, ext, ntfs
from clonebay.testdisks.files import sparse_copy, sparse_file
from tests.diskcheck import sha256_range
from tests.safety.test_damaged_frame import damage_last_frame

MIB = 1 << 20
CLONEBAY = [sys.executable, "-m", "clonebay"]


def _old_data(path: Path, size: int) -> str:
    sparse_file(path, size)
    with open(path, "r+b") as f:
        f.write(b"old data" * 4096)
    return sha256_range(path, 0, size)


def test_too_small_for_the_data_names_the_numbers(
    roomy: dict[str, tuple[disks.BuiltDisk, str]], roomy_images: dict[str, Path], tmp_path: Path
) -> None:
    built, digest = roomy["gpt"]
    plan_text = ""
    # the smallest target that takes the data, found from the plan's own floors
    fit = tmp_path / "fit.img"
    sparse_file(fit, built.size * 45 // 100 // 512 * 512)
    plan_text = clone_plan(str(built.path), str(fit)).text()
    least = {
        m.group(1): m.group(2) for m in re.finditer(r"(p\d).*shrunk \(least ([^)]+)\)", plan_text)
    }
    assert set(least) == {"p4", "p5"}, plan_text
    target = tmp_path / "small.img"
    size = 300 * MIB  # the ESP, MSR, swap and the rest alone take 157 MiB; the data more
    before = _old_data(target, size)
    with pytest.raises(TargetTooSmallError) as err:
        clone(str(built.path), str(target))
    said = err.value.message
    assert f"the target holds 300.0 MiB ({size} bytes)" in said
    found = re.search(r"even shrunk, the data of .* needs [\d.]+ MiB \((\d+) bytes\)", said)
    assert found, said
    # the bytes it names are exactly enough: a target of that size takes the data
    exact = sparse_file(tmp_path / "exact.img", int(found.group(1)))
    assert clone_plan(str(built.path), str(exact)).shrinks
    for name, need in least.items():
        assert f"{name} needs {need}" in said, said
    assert "p2 keeps 100.0 MiB (a system partition" in said
    assert "nothing was written" in said.lower()
    assert cli.main(["restore", "--yes", str(roomy_images["gpt"]), str(target)]) == 7
    assert sha256_range(target, 0, size) == before
    assert sha256_range(built.path, 0, built.size) == digest


def test_stream_onto_smaller_is_refused_saying_why(
    roomy: dict[str, tuple[disks.BuiltDisk, str]], roomy_images: dict[str, Path], tmp_path: Path
) -> None:
    built, _ = roomy["gpt"]
    stream = tmp_path / "disk.cbs"
    jobs.convert(str(roomy_images["gpt"]), str(stream))
    target = tmp_path / "small.img"
    size = built.size * 60 // 100 // 512 * 512
    before = _old_data(target, size)
    with pytest.raises(TargetTooSmallError, match="turn the stream into a directory image"):
        jobs.restore(str(stream), str(target))
    with pytest.raises(TargetTooSmallError, match="turn the stream into a directory image"):
        jobs.restore_plan(str(stream), str(target))
    assert sha256_range(target, 0, size) == before


def _disk_with(work: Path, volumes: list[tuple[Path, str]]) -> Path:
    """A GPT disk holding each volume file as a partition, 1 MiB aligned."""
    size = MIB + sum(v.stat().st_size for v, _ in volumes) + MIB
    path = sparse_file(work / "disk.img", size)
    argv = ["sgdisk"]
    for i, (vol, code) in enumerate(volumes, start=1):
        argv += [f"-n{i}:0:+{vol.stat().st_size // 1024}K", f"-t{i}:{code}"]
    run([*argv, str(path)])
    at = MIB
    for vol, _ in volumes:
        sparse_copy(vol, path, at)
        at += vol.stat().st_size
    return path


@pytest.fixture(scope="module")
def locked_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """p1: a hibernated NTFS (hiberfil.sys with HIBR) of 256 MiB; p2: an ext4 of 256 MiB whose
    journal needs recovery; both nearly empty."""
    work = tmp_path_factory.mktemp("locked")
    vol1 = ntfs.make_ntfs(work / "ntfs.img", 256 * MIB, start_sector=2048)
    ntfs.add_hiberfil(vol1)
    vol2 = sparse_file(work / "ext.img", 256 * MIB)
    run(["mkfs.ext4", "-q", "-F", str(vol2)])
    ext.add_pending_journal(vol2, "pending.txt", b"committed, not checkpointed\n" * 100)
    path = _disk_with(work, [(vol1, "0700"), (vol2, "8304")])
    report = inspect_disk(str(path))
    states = [pr.volume.state.value for pr in report.partitions if pr.volume]
    assert states == ["hibernated", "needs-recovery"], states
    return path


def test_locked_volumes_are_refused_for_shrinking_with_the_way_out(
    locked_disk: Path, tmp_path: Path
) -> None:
    target = tmp_path / "small.img"
    size = 400 * MIB
    before = _old_data(target, size)
    digest = sha256_range(locked_disk, 0, locked_disk.stat().st_size)
    with pytest.raises(TargetTooSmallError) as err:
        clone(str(locked_disk), str(target))
    said = err.value.message
    assert "p1 keeps 256.0 MiB (NTFS is hibernated" in said and "Shift+Shut down" in said, said
    assert "powercfg /h off" in said
    assert "p2 keeps 256.0 MiB (ext4 is needs-recovery" in said and "fsck" in said, said
    assert sha256_range(target, 0, size) == before
    assert sha256_range(locked_disk, 0, locked_disk.stat().st_size) == digest
    # onto a disk large enough they are copied as they are (no shrink needed)
    big = tmp_path / "big.img"
    sparse_file(big, locked_disk.stat().st_size)
    clone(str(locked_disk), str(big))


def test_scratch_too_small_is_refused_before_writing(
    roomy: dict[str, tuple[disks.BuiltDisk, str]], roomy_images: dict[str, Path], tmp_path: Path
) -> None:
    built, _ = roomy["gpt"]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(scratch)])
    try:
        target = tmp_path / "small.img"
        size = built.size * 45 // 100 // 512 * 512
        before = _old_data(target, size)
        with pytest.raises(SafetyError, match="scratch space") as err:
            clone(str(built.path), str(target), CloneOptions(scratch=str(scratch)))
        assert "--scratch DIR" in err.value.message
        assert sha256_range(target, 0, size) == before
        assert list(scratch.iterdir()) == []
        # the same for a restore of a directory image (its estimate from the image's records)
        with pytest.raises(SafetyError, match="scratch space"):
            jobs.restore(
                str(roomy_images["gpt"]),
                str(target),
                jobs.RestoreOptions(scratch=str(scratch)),
            )
        assert sha256_range(target, 0, size) == before
        # a scratch "folder" that is a file: a usage error, not a traceback
        afile = tmp_path / "afile"
        afile.write_text("x")
        argv = ["clone", "--yes", "--scratch", str(afile), str(built.path), str(target)]
        assert cli.main(argv) == UsageError.exit_code
        assert sha256_range(target, 0, size) == before
    finally:
        run(["umount", str(scratch)])


def test_target_is_the_source_is_refused(roomy: dict[str, tuple[disks.BuiltDisk, str]]) -> None:
    built, digest = roomy["mbr"]
    with pytest.raises(SafetyError, match="is the source"):
        clone(str(built.path), str(built.path))
    assert sha256_range(built.path, 0, built.size) == digest


def test_a_view_that_dies_under_its_resizer_writes_nothing(
    roomy: dict[str, tuple[disks.BuiltDisk, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view's daemon is killed just as the resizer starts (as an out-of-memory kill
    would): the job ends in a clear error, the target is not touched, and nothing is left in
    the scratch folder."""
    built, digest = roomy["gpt"]
    real = resize.resize

    scratch = tmp_path / "scratch"

    def killing(fstype: str, path: str, new_size: int, volume: object = None) -> None:
        point = str(scratch)  # the daemon's mountpoint lies in it
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    argv = (proc / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"clonebay.browse.daemon" in argv and any(point.encode() in a for a in argv):
                    os.kill(int(proc.name), signal.SIGKILL)
        real(fstype, path, new_size, volume)  # type: ignore[arg-type]

    monkeypatch.setattr(resize, "resize", killing)
    target = tmp_path / "small.img"
    size = built.size * 45 // 100 // 512 * 512
    before = _old_data(target, size)
    with pytest.raises(ClonebayError) as err:
        clone(str(built.path), str(target), CloneOptions(scratch=str(scratch)))
    assert "shrinking" in err.value.message or "view" in err.value.message, err.value.message
    assert "nothing was written" in err.value.message.lower() or "incomplete" not in (
        err.value.message
    )
    assert sha256_range(target, 0, size) == before
    assert sha256_range(built.path, 0, built.size) == digest
    assert not any(scratch.iterdir())


def test_an_ext_with_errors_is_refused_for_shrinking(tmp_path: Path) -> None:
    """An ext4 whose superblock says clean but whose inode has a wrong link count: e2fsck
    -f -n finds the errors in the view, and the shrink is refused before the target is
    touched (a repaired copy that differs from its source without a word is not a copy)."""
    vol = sparse_file(tmp_path / "ext.img", 512 * MIB)
    run(["mkfs.ext4", "-q", "-F", str(vol)])
    run(["debugfs", "-w", "-R", "write /etc/hostname hostname", str(vol)])
    run(["debugfs", "-w", "-R", "sif hostname links_count 5", str(vol)])  # a wrong link count
    path = _disk_with(tmp_path, [(vol, "8304")])
    [pr] = inspect_disk(str(path)).partitions
    assert pr.volume is not None and pr.volume.state.value == "clean"
    target = tmp_path / "small.img"
    size = 300 * MIB
    before = _old_data(target, size)
    with pytest.raises(ClonebayError, match=r"ext4 has errors \(e2fsck -f -n exited 4"):
        clone(str(path), str(target))
    assert sha256_range(target, 0, size) == before


def _at(moment: str, scratch: Path) -> bool:
    """Has the job reached ``moment``: a view mounted in ``scratch``, or a loop device over
    one (a resizer at work)?"""
    if moment == "view":
        return any(mounted_at(v) for v in scratch.glob("shrink-*/view"))
    return str(scratch) in run(["losetup", "--list", "--noheadings"]).stdout.decode()


@pytest.mark.parametrize("moment", ["view", "resizer"])
def test_a_killed_job_leaves_no_view_behind(
    roomy: dict[str, tuple[disks.BuiltDisk, str]], moment: str, tmp_path: Path
) -> None:
    """``kill -9`` of the clone while a shrink view is mounted (its first one, or while a
    resizer works on it through a loop device): the view's daemon follows its job
    (PR_SET_PDEATHSIG), unmounts and removes its overlay; no loop device is left on it; the
    target is untouched (the shrink comes before the first write)."""
    built, digest = roomy["gpt"]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    target = tmp_path / "small.img"
    size = built.size * 45 // 100 // 512 * 512
    before = _old_data(target, size)
    argv = [*CLONEBAY, "clone", "--yes", "--scratch", str(scratch), str(built.path), str(target)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _at(moment, scratch):
            assert proc.poll() is None, "the clone ended before a view was seen"
            assert time.monotonic() < deadline, "no view appeared"
            time.sleep(0.005)
        proc.kill()
    finally:
        proc.wait()
    deadline = time.monotonic() + 30
    while any(scratch.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(scratch.iterdir()) == [], "the view's folder was left behind"
    assert str(scratch) not in Path("/proc/self/mountinfo").read_text()
    assert str(scratch) not in run(["losetup", "--list", "--noheadings"]).stdout.decode()
    assert sha256_range(target, 0, size) == before
    assert sha256_range(built.path, 0, built.size) == digest


def test_a_damaged_image_never_ends_in_a_shrunk_success(
    roomy: dict[str, tuple[disks.BuiltDisk, str]], roomy_images: dict[str, Path], tmp_path: Path
) -> None:
    """A damaged frame in the ext4 region of an image restored onto a smaller disk: the check
    before the first write refuses (exit 5, nothing written, the views never started); with
    --no-check the restore fails where it meets the frame (in the resizer's view, before the
    target is opened, or while writing, saying the target is incomplete), never exit 0."""
    built, _ = roomy["gpt"]
    image = tmp_path / "damaged.image"
    shutil.copytree(roomy_images["gpt"], image)
    damage_last_frame(image, "p5")
    target = tmp_path / "small.img"
    size = built.size * 45 // 100 // 512 * 512
    before = _old_data(target, size)
    scratch = tmp_path / "scratch"
    argv = ["restore", "--yes", "--scratch", str(scratch), str(image), str(target)]
    assert cli.main(argv) == 5
    assert sha256_range(target, 0, size) == before
    assert not scratch.exists() or not any(scratch.iterdir())
    code = cli.main([*argv[:2], "--no-check", *argv[2:]])
    assert code != 0
    assert not any(scratch.iterdir())
