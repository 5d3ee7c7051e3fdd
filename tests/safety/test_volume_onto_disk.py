"""Safety audit #5: a partition image restored (or a partition cloned) onto a whole disk that
holds a partition table was written at byte 0 with no warning, and the old backup GPT stayed at
the disk's end (gdisk, or firmware restoring the primary GPT from it, would then write over the
ext4 superblock). Now refused before the first write, naming the table and ``--whole-disk``;
with ``--whole-disk`` the old table goes, backup included. Onto a partition: accepted as before.

Also audit #19: the too-small refusal gives the byte count the source needs, and that count is
exact (a target one sector smaller is refused, one of exactly that size is accepted)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clonebay.errors import SafetyError, TargetTooSmallError
from clonebay.system.run import output, run
from clonebay.testdisks import ext
from clonebay.testdisks.fat import hash_folder
from clonebay.testdisks.files import sparse_file
from tests.edgedisks import CLONEBAY, MIB, clonebay, gpt_disk, layout, loop, mkext, sha256

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")
SIZE = 96 * MIB
GPT_BACKUP = 33 * 512  # backup entries and header after the last usable LBA (sgdisk's default)


@dataclass(frozen=True)
class Source:
    disk: Path
    p1img: Path  # clonebay save --partition 1
    p1_end: int  # byte after p1
    files: dict[str, str]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """A GPT disk: p1 ext4 (48 MiB, a few random files), free space after; p1 saved alone."""
    work = tmp_path_factory.mktemp("volume")
    root = work / "files"
    root.mkdir()
    rng = random.Random(5)
    for i in range(5):
        (root / f"f{i}.bin").write_bytes(rng.randbytes(rng.randrange(1, 400_000)))
    disk = gpt_disk(work / "src.img", SIZE, "1:2048:+48M")
    start, sectors = layout(disk)[1]
    mkext(disk, start * 512, sectors * 512, root=root)
    p1img = work / "p1img"
    saved = clonebay("save", str(disk), str(p1img), "--partition", "1")
    assert saved.returncode == 0, saved.stdout + saved.stderr
    return Source(disk, p1img, (start + sectors) * 512, hash_folder(root))


@contextlib.contextmanager
def partition_nodes(image: Path) -> Iterator[str]:
    """``image`` as a loop device with its partition nodes (partx -a); detached after."""
    with loop(image) as dev:
        run(["partx", "-a", dev])
        yield dev


def _signatures(path: Path | str) -> list[str]:
    found = output(["wipefs", "--no-act", "--json", str(path)]) or '{"signatures": []}'
    return [s["type"] for s in json.loads(found)["signatures"]]


def assert_refused(proc: subprocess.CompletedProcess[str], target: Path, before: str) -> None:
    said = proc.stdout + proc.stderr
    assert proc.returncode == SafetyError.exit_code, said
    assert "gpt partition table" in said and "--whole-disk" in said, said
    assert "nothing was written" in said
    assert sha256(target) == before, "the disk was written before the refusal"


def assert_only_ext4(target: Path, files: dict[str, str]) -> None:
    """The whole disk is one ext4: no PMBR, no primary or backup GPT; clean; the files."""
    assert _signatures(target) == ["ext4"]
    verify = output(["sgdisk", "-v", str(target)])
    assert "Creating new GPT entries" in verify  # sgdisk found no GPT, primary or backup
    assert "backup" not in verify.lower()
    with open(target, "rb") as f:
        f.seek(-GPT_BACKUP, os.SEEK_END)
        assert b"EFI PART" not in f.read(), "the old backup GPT is still there"
    ext.fsck(target)
    assert ext.file_hashes(target) == files


@pytest.mark.parametrize("how", ["restore", "clone"])
def test_volume_onto_a_partitioned_disk_is_refused(
    source: Source, tmp_path: Path, how: str
) -> None:
    whole = tmp_path / "whole.img"
    shutil.copyfile(source.disk, whole)
    before, src_before = sha256(whole), sha256(source.disk)
    with partition_nodes(source.disk) as dev:
        what = str(source.p1img) if how == "restore" else f"{dev}p1"
        refused = clonebay(how, what, str(whole), "--yes")
        assert_refused(refused, whole, before)
        done = clonebay(how, what, str(whole), "--whole-disk", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "p0:" not in done.stdout + done.stderr  # #19: a volume is not "p0"
    assert_only_ext4(whole, source.files)
    assert sha256(source.disk) == src_before


def _receive_over_tcp(image: Path, target: Path, work: Path, *extra: str) -> tuple[int, str]:
    """``clonebay receive --listen`` onto ``target`` fed by ``clonebay send --to`` on the
    loopback (a free port: parallel runs do not meet): the receiver's exit code and output."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = work / "receive.log"
    argv = [str(CLONEBAY), "receive", "--listen", "--tcp-port", str(port), "--key", "k"]
    with open(log, "wb") as out:
        receiver = subprocess.Popen(
            [*argv, *extra, "--yes", "--json", str(target)], stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while '"listening"' not in log.read_text():
            assert receiver.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        send = [str(CLONEBAY), "send", "--to", f"127.0.0.1:{port}", "--key", "k", str(image)]
        subprocess.run(send, capture_output=True, timeout=240, check=False)
        return receiver.wait(timeout=240), log.read_text()
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()


def test_volume_received_onto_a_partitioned_disk_is_refused(source: Source, tmp_path: Path) -> None:
    whole = tmp_path / "whole.img"
    shutil.copyfile(source.disk, whole)
    before = sha256(whole)
    code, said = _receive_over_tcp(source.p1img, whole, tmp_path)
    assert code == SafetyError.exit_code, said
    assert "gpt partition table" in said and "--whole-disk" in said, said
    assert sha256(whole) == before, "the disk was written before the refusal"
    code, said = _receive_over_tcp(source.p1img, whole, tmp_path, "--whole-disk")
    assert code == 0, said
    assert_only_ext4(whole, source.files)


@pytest.mark.parametrize("how", ["restore", "clone"])
def test_volume_onto_a_partition_is_accepted(source: Source, tmp_path: Path, how: str) -> None:
    other = gpt_disk(tmp_path / "other.img", SIZE, "1:2048:+16M", "2:0:+64M")
    src_before = sha256(source.disk)
    with partition_nodes(source.disk) as src, partition_nodes(other) as tgt:
        what = str(source.p1img) if how == "restore" else f"{src}p1"
        proc = clonebay(how, what, f"{tgt}p2", "--yes")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        ext.fsck(Path(f"{tgt}p2"))
        assert ext.file_hashes(Path(f"{tgt}p2")) == source.files
    assert layout(other) == {1: (2048, 16 * 2048), 2: (2048 + 16 * 2048, 64 * 2048)}
    assert sha256(source.disk) == src_before


def test_too_small_names_the_bytes_needed(source: Source, tmp_path: Path) -> None:
    """#19: the refusal gives the exact count: one sector less is refused, that many fits."""
    needed = source.p1_end + GPT_BACKUP
    small = sparse_file(tmp_path / "small.img", needed - 512)
    proc = clonebay("clone", str(source.disk), str(small), "--grow", "none", "--yes")
    said = proc.stdout + proc.stderr
    assert proc.returncode == TargetTooSmallError.exit_code, said
    assert f"({needed} bytes)" in said, said
    assert small.stat().st_size == needed - 512 and not any(small.read_bytes())
    exact = sparse_file(tmp_path / "exact.img", needed)
    fits = clonebay("clone", str(source.disk), str(exact), "--grow", "none", "--dry-run")
    assert fits.returncode == 0, fits.stdout + fits.stderr
