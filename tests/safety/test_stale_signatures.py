"""Safety audit #4: a stale md RAID 1.0 superblock at the end of a future partition outlived a
restore (directory, stream, TCP and multicast receive all wiped only the disk's first and last
MiB, and a native copy writes only used blocks), so blkid called the restored ext4 a RAID member.

The target here is a used disk: random bytes, with a valid md 1.0 superblock (tests/fs/raidmeta.py,
as mdadm writes it) where blkid looks for one at the end of p1. blkid must
see it before the restore (the test cannot pass vacuously) and only ext4 after each route."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clonebay.system.run import output, run
from clonebay.testdisks import ext
from clonebay.testdisks.fat import hash_folder
from tests.diskcheck import extract
from tests.edgedisks import CLONEBAY, MIB, clonebay, gpt_disk, layout, loop, mkext, sha256
from tests.fs.raidmeta import Array, md1_superblock
from tests.net import session
from tests.net.netns import lan

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and netns need root")
SIZE = 96 * MIB
KEY = "stale-signatures"

# the stale member: a 2-disk RAID 1 array's first device, with a 1.0 superblock
STALE = Array("oldhost:oldraid1", b"\x11" * 16, level=1, raid_disks=2, role=0)


@dataclass(frozen=True)
class Source:
    disk: Path
    directory: Path
    stream: Path
    p1: tuple[int, int]  # start, size in bytes
    files: dict[str, str]  # path -> sha256 of what p1 holds


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """A GPT disk with p1 ext4 (a few random files) and free space after it (the disk's own
    tail wipe must not be what removes the stale superblock), saved as a directory and as a
    stream."""
    work = tmp_path_factory.mktemp("stale")
    root = work / "files"
    (root / "docs").mkdir(parents=True)
    rng = random.Random(4)
    for i in range(6):
        (root / "docs" / f"f{i}.bin").write_bytes(rng.randbytes(rng.randrange(1, 300_000)))
    (root / "hello.txt").write_bytes(b"stale signatures\n")
    disk = gpt_disk(work / "src.img", SIZE, "1:2048:+48M")
    start, sectors = layout(disk)[1]
    p1 = (start * 512, sectors * 512)
    mkext(disk, *p1, root=root)
    directory = work / "image"
    saved = clonebay("save", str(disk), str(directory))
    assert saved.returncode == 0, saved.stdout + saved.stderr
    stream = work / "src.cbs"
    with open(stream, "wb") as out:
        proc = subprocess.run(
            [str(CLONEBAY), "save", str(disk), "-"],
            stdout=out,
            stderr=subprocess.PIPE,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    assert proc.returncode == 0, proc.stderr.decode()
    return Source(disk, directory, stream, p1, hash_folder(root))


def used_disk(path: Path, p1: tuple[int, int]) -> Path:
    """A target of the source's size: random bytes and a stale md 1.0 member at p1's end."""
    rng = random.Random(path.name)
    with open(path, "wb") as f:
        for _ in range(SIZE // MIB):
            f.write(rng.randbytes(MIB))
        at, sb = md1_superblock(STALE, "1.0", p1[1])
        os.pwrite(f.fileno(), sb, p1[0] + at)
    assert _blkid(path, p1).get("TYPE") == "linux_raid_member"  # it is really there
    return path


def _blkid(path: Path, extent: tuple[int, int]) -> dict[str, str]:
    """blkid's low-level probe of ``extent`` (start, size) of ``path``: its NAME=value pairs."""
    argv = ["blkid", "-p", "-o", "export", "-O", str(extent[0]), "-S", str(extent[1])]
    proc = run([*argv, str(path)], check=False)
    pairs = (ln.split("=", 1) for ln in proc.stdout.decode().splitlines() if "=" in ln)
    return dict(pairs)


def assert_plain_ext4(target: Path, source: Source, work: Path) -> None:
    """p1 of ``target`` is ext4 and nothing else, clean, holding the source's files."""
    assert _blkid(target, source.p1).get("TYPE") == "ext4"
    p1 = extract(target, *source.p1, work / "p1.img")
    found = json.loads(output(["wipefs", "--no-act", "--json", str(p1)]) or '{"signatures":[]}')
    assert [s["type"] for s in found["signatures"]] == ["ext4"], found
    ext.fsck(p1)
    assert ext.file_hashes(p1) == source.files


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _events(log: Path) -> list[dict[str, object]]:
    lines = log.read_text(errors="replace").splitlines()
    return [json.loads(ln) for ln in lines if ln.startswith("{")]


@contextlib.contextmanager
def _running(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _tcp_receive(source: Source, target: Path, work: Path) -> None:
    port = _free_port()
    recv_log, send_log = work / "r.log", work / "s.log"
    receive = [str(CLONEBAY), "receive", "--listen", "--tcp-port", str(port), "--key", KEY]
    with _running([*receive, "--yes", "--json", str(target)], recv_log) as receiver:
        deadline = time.monotonic() + 60
        while not any(e.get("event") == "listening" for e in _events(recv_log)):
            assert receiver.poll() is None, recv_log.read_text()
            assert time.monotonic() < deadline, "the receiver never listened"
            time.sleep(0.1)
        to = f"127.0.0.1:{port}"
        send = [str(CLONEBAY), "send", "--to", to, "--key", KEY, str(source.directory)]
        with _running(send, send_log) as sender:
            assert sender.wait(timeout=240) == 0, send_log.read_text()[-3000:]
        assert receiver.wait(timeout=240) == 0, recv_log.read_text()[-3000:]


def _multicast_receive(source: Source, target: Path, work: Path) -> None:
    with contextlib.ExitStack() as stack:
        try:
            sender_node, node = stack.enter_context(lan(2)).nodes
        except RuntimeError as exc:  # `ip netns add` refused: no namespaces here
            pytest.skip(f"network namespaces unavailable: {exc}")
        receiver = session.receive(node, target, work / "r.log")  # adds --yes
        stack.callback(receiver.stop)
        sender = session.send(sender_node, source.directory, work / "s.log")
        stack.callback(sender.stop)
        assert sender.wait() == 0, sender.log.read_text()[-3000:]
        assert receiver.wait() == 0, receiver.log.read_text()[-3000:]


@pytest.mark.parametrize("route", ["directory", "stream", "tcp", "multicast"])
def test_restore_wipes_a_stale_raid_superblock(source: Source, tmp_path: Path, route: str) -> None:
    before = sha256(source.disk)
    target = used_disk(tmp_path / "target.img", source.p1)
    if route in ("directory", "stream"):
        image = source.directory if route == "directory" else source.stream
        proc = clonebay("restore", str(image), str(target), "--yes")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    elif route == "tcp":
        _tcp_receive(source, target, tmp_path)
    else:
        _multicast_receive(source, target, tmp_path)
    assert_plain_ext4(target, source, tmp_path)
    assert sha256(source.disk) == before


def test_clone_wipes_a_stale_raid_superblock(source: Source, tmp_path: Path) -> None:
    """Clone already wiped at 1365d60 for a whole disk; kept here as the reference route."""
    before = sha256(source.disk)
    target = used_disk(tmp_path / "target.img", source.p1)
    proc = clonebay("clone", str(source.disk), str(target), "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_plain_ext4(target, source, tmp_path)
    assert sha256(source.disk) == before


@contextlib.contextmanager
def partition_nodes(image: Path) -> Iterator[str]:
    """``image`` as a loop device with its partition nodes (partx -a); detached after."""
    with loop(image) as dev:
        run(["partx", "-a", dev])
        yield dev


def test_single_volume_clone_wipes_a_stale_raid_superblock(source: Source, tmp_path: Path) -> None:
    """A partition cloned onto a partition: the single-volume clone skipped the wipe."""
    before = sha256(source.disk)
    target = used_disk(tmp_path / "target.img", source.p1)
    run(["sgdisk", "-o", "-n1:2048:+48M", str(target)])
    assert _blkid(target, source.p1).get("TYPE") == "linux_raid_member"
    with partition_nodes(source.disk) as src, partition_nodes(target) as tgt:
        proc = clonebay("clone", f"{src}p1", f"{tgt}p1", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_plain_ext4(target, source, tmp_path)
    assert sha256(source.disk) == before
