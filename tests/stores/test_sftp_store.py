"""SFTP stores against a real OpenSSH server in a network namespace: a save, verify, browse and
restore round trip with a password and with a key; the host key trusted only when pinned or
already known, a changed key refused, a wrong password and a missing folder said in plain
words; the network pulled in the middle of a save and of a restore ends in a clear error (not a
hang) that says what is incomplete."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clonebay.testdisks import disks
from clonebay.testdisks.files import sparse_file
from tests.diskcheck import assert_disk_matches, sha256_range
from tests.stores.cli import clonebay
from tests.stores.conftest import PASSWORD, USER, SshServer, store_mounts

HANG = 240  # seconds: only a guard against a hang, never a measurement


def url(server: SshServer, inside: str) -> str:
    return f"sftp://{USER}@{server.address}/~/{inside}"


def with_password(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"CLONEBAY_PASSWORD": PASSWORD, **(extra or {})}


def test_round_trip_with_a_password_and_a_pinned_host_key(
    ssh_server: SshServer, known_hosts: Path, quick_disk: disks.BuiltDisk, tmp_path: Path
) -> None:
    image = url(ssh_server, "saved/quick.image")
    pin = ssh_server.fingerprint()
    saved = clonebay(
        "save", "--host-key", pin, str(quick_disk.path), image, env=with_password(), timeout=HANG
    )
    assert saved.returncode == 0, saved.stderr
    assert "read back from the store: OK" in saved.stdout, saved.stdout
    on_server = ssh_server.home / "saved" / "quick.image"
    assert (on_server / "manifest.json").is_file()
    assert store_mounts() == []
    # the key is remembered for the session: no pin needed any more
    checked = clonebay("verify", image, env=with_password(), timeout=HANG)
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stderr
    ext = next(p for p in quick_disk.partitions if p.fstype == "ext4")
    listed = clonebay("ls", f"{image}:p{ext.number}", "/", env=with_password(), timeout=HANG)
    assert listed.returncode == 0 and listed.stdout.strip(), listed.stderr
    target = sparse_file(tmp_path / "target.img", quick_disk.size)
    restored = clonebay("restore", "--yes", image, str(target), env=with_password(), timeout=HANG)
    assert restored.returncode == 0, restored.stderr
    assert_disk_matches(target, quick_disk, tmp_path)
    assert store_mounts() == []


def test_a_key_file_logs_in_without_a_password(
    ssh_server: SshServer, known_hosts: Path, quick_disk: disks.BuiltDisk
) -> None:
    image = url(ssh_server, "bykey/quick.image")
    out = clonebay(
        "save", "--identity", str(ssh_server.work / "client"), "--host-key",
        ssh_server.fingerprint(), str(quick_disk.path), image, timeout=HANG,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (ssh_server.home / "bykey" / "quick.image" / "manifest.json").is_file()


def test_an_unknown_host_key_is_never_accepted_without_a_terminal_or_a_pin(
    ssh_server: SshServer, known_hosts: Path, quick_disk: disks.BuiltDisk
) -> None:
    out = clonebay("save", str(quick_disk.path), url(ssh_server, "nokey/q.image"),
                   env=with_password(), timeout=HANG)  # fmt: skip
    assert out.returncode == 12, out.stderr
    assert "was not accepted" in out.stderr and ssh_server.fingerprint() in out.stderr
    assert not (ssh_server.home / "nokey").exists()
    wrong = "SHA256:" + "A" * 43
    out = clonebay("save", "--host-key", wrong, str(quick_disk.path),
                   url(ssh_server, "nokey/q.image"), env=with_password(), timeout=HANG)  # fmt: skip
    assert out.returncode == 12 and "is not the one given with --host-key" in out.stderr
    assert not known_hosts.exists() or known_hosts.read_text() == ""


def test_a_changed_host_key_is_refused(
    ssh_server: SshServer, known_hosts: Path, quick_disk: disks.BuiltDisk
) -> None:
    first = clonebay("info", "--host-key", ssh_server.fingerprint(),
                     url(ssh_server, "none.image"), env=with_password(), timeout=HANG)  # fmt: skip
    assert "host key" not in first.stderr.lower(), first.stderr  # trusted (the image is absent)
    remembered = known_hosts.read_text()
    old_key = (ssh_server.work / "hostkey").read_text()
    old_pub = (ssh_server.work / "hostkey.pub").read_text()
    ssh_server.stop()
    ssh_server.new_host_key()
    ssh_server.start()
    try:
        out = clonebay("save", str(quick_disk.path), url(ssh_server, "changed/q.image"),
                       env=with_password(), timeout=HANG)  # fmt: skip
        assert out.returncode == 12, out.stderr
        assert "CHANGED" in out.stderr and ssh_server.fingerprint() in out.stderr
        assert not (ssh_server.home / "changed").exists()
        assert known_hosts.read_text() == remembered, "the new key was remembered"
    finally:
        ssh_server.stop()  # back to the session's key for the other tests
        (ssh_server.work / "hostkey").write_text(old_key)
        (ssh_server.work / "hostkey.pub").write_text(old_pub)
        os.chmod(ssh_server.work / "hostkey", 0o600)
        ssh_server.start()


def test_wrong_password_and_missing_folder_are_said_plainly(
    ssh_server: SshServer, known_hosts: Path
) -> None:
    pin = ssh_server.fingerprint()
    out = clonebay("verify", "--host-key", pin, url(ssh_server, "x.image"),
                   env={"CLONEBAY_PASSWORD": "not-the-password"}, timeout=HANG)  # fmt: skip
    assert out.returncode == 12, out.stderr
    assert "refused the password or key" in out.stderr, out.stderr
    out = clonebay("verify", "--host-key", pin,
                   f"sftp://{USER}@{ssh_server.address}/no/such/dir/x.image",
                   env=with_password(), timeout=HANG)  # fmt: skip
    assert out.returncode != 0 and "no/such/dir/x.image" in out.stderr, out.stderr
    out = clonebay("verify", f"sftp://{USER}@{ssh_server.address}:2222/x.image",
                   env=with_password(), timeout=HANG)  # fmt: skip
    assert out.returncode == 12 and "no SSH server answered" in out.stderr, out.stderr
    assert store_mounts() == []


def _pull_cable_when(server: SshServer, ready: Callable[[], bool], stop: threading.Event) -> None:
    while not stop.is_set():
        if ready():
            server.link(up=False)
            return
        time.sleep(0.05)


@pytest.fixture
def cable(ssh_server: SshServer) -> Iterator[SshServer]:
    """The server behind a slow (40 Mbit/s) link, so a job is surely in the middle when the
    cable is pulled; full speed, plugged in and restarted afterwards."""
    ssh_server.shape("40mbit")
    yield ssh_server
    ssh_server.shape(None)
    ssh_server.link(up=True)
    ssh_server.stop()  # sessions stuck on the dead link
    ssh_server.start()


def test_network_lost_during_a_save_is_an_error_not_a_hang(
    cable: SshServer, known_hosts: Path, quick_disk: disks.BuiltDisk
) -> None:
    server = cable
    packs = server.home / "lost" / "q.image" / "packs"
    stop = threading.Event()
    puller = threading.Thread(
        target=_pull_cable_when,
        args=(server, lambda: packs.is_dir() and any(packs.iterdir()), stop),
    )
    puller.start()
    source_hash = sha256_range(quick_disk.path, 0, quick_disk.size)
    try:
        out = clonebay("save", "--pack-limit", "8", "--host-key", server.fingerprint(),
                       str(quick_disk.path), url(server, "lost/q.image"),
                       env=with_password(), timeout=HANG)  # fmt: skip
    finally:
        stop.set()
        puller.join()
    assert out.returncode not in (0, 9), out.stdout + out.stderr
    assert "incomplete" in out.stderr or "stopped" in out.stderr, out.stderr
    assert not (server.home / "lost" / "q.image" / "manifest.json").exists()
    assert sha256_range(quick_disk.path, 0, quick_disk.size) == source_hash


def test_network_lost_during_a_restore_says_the_target_is_incomplete(
    cable: SshServer, known_hosts: Path, quick_disk: disks.BuiltDisk, tmp_path: Path
) -> None:
    server = cable
    image = url(server, "forrestore/q.image")
    saved = clonebay("save", "--pack-limit", "8", "--host-key", server.fingerprint(),
                     str(quick_disk.path), image, env=with_password(), timeout=HANG)  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    target = sparse_file(tmp_path / "target.img", quick_disk.size)
    started = threading.Event()

    def restore() -> subprocess.CompletedProcess[str]:
        started.set()
        return clonebay("restore", "--yes", "--no-check", image, str(target),
                        env=with_password(), timeout=HANG)  # fmt: skip

    result: list[subprocess.CompletedProcess[str]] = []
    worker = threading.Thread(target=lambda: result.append(restore()))
    worker.start()
    started.wait()
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline and target.stat().st_blocks * 512 < 4 << 20:
        time.sleep(0.05)  # until the restore has written some data
    server.link(up=False)
    worker.join()
    (out,) = result
    assert out.returncode not in (0, 9), out.stdout + out.stderr
    assert "incomplete" in out.stderr, out.stderr
