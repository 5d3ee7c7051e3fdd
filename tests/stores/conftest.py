"""Image stores for the tests: store partitions on loop devices (ext4, NTFS, FAT32, exFAT, made
by the real mkfs tools), a small QUICK-scale source disk, and a real OpenSSH server.

The SSH server runs in a network namespace of its own (a veth pair to the host, 10.204.N.0/24)
and in a mount namespace where /etc/passwd, /etc/shadow and /etc/group are the test's own files
with one extra user, so nothing of the host's accounts changes. Its host key is made per test
session; ``restart_with_new_key`` plays a reinstalled (or impersonated) server.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clonebay.system import loopdev
from clonebay.testdisks import disks
from clonebay.testdisks.files import sparse_file

MIB = 1 << 20
USER = "cbstore"
PASSWORD = "Store-pw-" + secrets.token_hex(4)
UID = 42420

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root")

MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-L", "{label}"],
    "ntfs": ["mkntfs", "-q", "-f", "-F", "-L", "{label}"],
    "vfat": ["mkfs.vfat", "-F", "32", "-n", "{label}"],
    "exfat": ["mkfs.exfat", "-L", "{label}"],
}
FSCK = {
    "ext4": ["e2fsck", "-fn"],
    "ntfs": ["ntfsfix", "-n"],
    "vfat": ["fsck.vfat", "-n"],
    "exfat": ["fsck.exfat", "-n"],
}


@dataclass
class StoreVolume:
    fstype: str
    label: str
    device: str
    backing: Path

    def url(self, inside: str) -> str:
        return f"disk:LABEL={self.label}/{inside}"


def make_volume(path: Path, fstype: str, label: str, size: int) -> StoreVolume:
    sparse_file(path, size)
    argv = [a.format(label=label) for a in MKFS[fstype]]
    subprocess.run([*argv, str(path)], check=True, capture_output=True)
    return StoreVolume(fstype, label, loopdev.attach(str(path)), path)


def fsck_clean(volume: StoreVolume) -> None:
    done = subprocess.run(
        [*FSCK[volume.fstype], volume.device], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{volume.fstype} store not clean:\n{done.stdout}{done.stderr}"


def store_mounts() -> list[str]:
    """Mounts under /run/clonebay/stores now (none should outlive a job)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return [ln.split()[4] for ln in f if " /run/clonebay/stores/" in ln]


@pytest.fixture(scope="package")
def quick_disk(tmp_path_factory: pytest.TempPathFactory) -> disks.BuiltDisk:
    """A QUICK-scale GPT disk (ESP, NTFS, ext4, swap, raw) with its file hashes."""
    work = tmp_path_factory.mktemp("quick")
    return disks.gpt_disk(work / "disk.img", disks.QUICK, work=work)


@pytest.fixture(scope="package")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, StoreVolume]]:
    """One store partition of each filesystem, 1 GiB sparse, labelled per run."""
    work = tmp_path_factory.mktemp("stores")
    tag = secrets.token_hex(2).upper()
    made: dict[str, StoreVolume] = {}
    try:
        for fstype in MKFS:
            label = f"CBS{fstype[:3].upper()}{tag}"
            made[fstype] = make_volume(work / f"{fstype}.img", fstype, label, 1024 * MIB)
        yield made
    finally:
        for volume in made.values():
            loopdev.detach(volume.device)


# --- an SSH server -----------------------------------------------------------------------


@dataclass
class SshServer:
    namespace: str
    address: str
    home: Path
    work: Path
    host_end: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def keys(self) -> Path:
        """authorized_keys: sshd reads it as the user, so it lives outside pytest's 0700 tree."""
        return self.home.parent / f"{self.home.name}.keys"

    def start(self) -> None:
        config = self.work / "sshd_config"
        config.write_text(
            f"Port 22\nListenAddress {self.address}\nHostKey {self.work / 'hostkey'}\n"
            "PasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM no\n"
            f"PidFile {self.work / 'sshd.pid'}\nSubsystem sftp internal-sftp\nStrictModes no\n"
            f"AuthorizedKeysFile {self.keys}\nPermitRootLogin no\n",
            encoding="utf-8",
        )
        binds = " && ".join(
            f"mount --bind {self.work / name} /etc/{name}" for name in ("passwd", "shadow", "group")
        )
        # sshd refuses to start without its privilege-separation folder, which the package's
        # tmpfiles rule makes at boot: a machine that got openssh-server before its last boot
        # (not through make apt since) has none in its /run
        privsep = "mkdir -p -m 0755 /run/sshd"
        daemon = f"exec /usr/sbin/sshd -D -f {config} -E {self.work / 'sshd.log'}"
        script = f"{binds} && {privsep} && {daemon}"
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, "unshare", "-m", "sh", "-c", script],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["ssh-keyscan", "-T", "2", self.address], capture_output=True, check=False
            )
            if probe.stdout:
                return
            time.sleep(0.3)
        raise RuntimeError(f"sshd did not come up: {(self.work / 'sshd.log').read_text()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        # sessions outlive the listener: end them too (they run in our namespace only)
        subprocess.run(
            ["ip", "netns", "exec", self.namespace, "pkill", "-f", f"sshd.*{USER}"], check=False
        )

    def fingerprint(self) -> str:
        out = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", str(self.work / "hostkey.pub")],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.split()[1]

    def new_host_key(self) -> None:
        for name in ("hostkey", "hostkey.pub"):
            (self.work / name).unlink(missing_ok=True)
        _keygen(self.work / "hostkey")

    def shape(self, rate: str | None) -> None:
        """Slow both directions down to ``rate`` (tc's token bucket), or back to full speed."""
        for prefix, dev in ((["ip", "netns", "exec", self.namespace], "srv0"), ([], self.host_end)):
            subprocess.run([*prefix, "tc", "qdisc", "del", "dev", dev, "root"], check=False,
                           capture_output=True)  # fmt: skip
            if rate:
                subprocess.run(
                    [*prefix, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                     "burst", "64kb", "latency", "500ms"],
                    check=True,
                )  # fmt: skip

    def link(self, up: bool) -> None:
        """Pull (or plug back) the server's network cable."""
        state = "up" if up else "down"
        subprocess.run(
            ["ip", "netns", "exec", self.namespace, "ip", "link", "set", "srv0", state], check=True
        )


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _accounts(work: Path, home: Path) -> None:
    hashed = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input=PASSWORD,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for name, line in (
        ("passwd", f"{USER}:x:{UID}:{UID}::{home}:/bin/sh"),
        ("shadow", f"{USER}:{hashed}:19000:0:99999:7:::"),
        ("group", f"{USER}:x:{UID}:"),
    ):
        text = Path(f"/etc/{name}").read_text(encoding="utf-8")
        (work / name).write_text(text.rstrip("\n") + "\n" + line + "\n", encoding="utf-8")
    os.chmod(work / "shadow", 0o600)


@pytest.fixture(scope="package")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        pytest.skip("openssh-server is not installed (make apt installs it)")
    work = tmp_path_factory.mktemp("sshd")
    home = Path(tempfile.mkdtemp(prefix="cbstore-home-"))  # pytest's folders are 0700
    home.chmod(0o755)
    os.chown(home, UID, UID)
    atexit.register(shutil.rmtree, home, True)
    _accounts(work, home)
    _keygen(work / "hostkey")
    _keygen(work / "client")
    net = 100 + secrets.randbelow(150)
    ns = f"cbstore-{secrets.token_hex(3)}"
    host_end, srv_end = f"cbh{net}", "srv0"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    with contextlib.ExitStack() as stack:
        stack.callback(subprocess.run, ["ip", "netns", "del", ns], check=False)
        stack.callback(subprocess.run, ["ip", "link", "del", host_end], check=False)
        for argv in (
            ["ip", "link", "add", host_end, "type", "veth", "peer", "name", srv_end, "netns", ns],
            ["ip", "addr", "add", f"10.204.{net}.1/24", "dev", host_end],
            ["ip", "link", "set", host_end, "up"],
            ["ip", "netns", "exec", ns, "ip", "addr", "add", f"10.204.{net}.2/24", "dev", srv_end],
            ["ip", "netns", "exec", ns, "ip", "link", "set", srv_end, "up"],
            ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
        ):
            subprocess.run(argv, check=True)
        server = SshServer(ns, f"10.204.{net}.2", home, work, host_end)
        shutil.copy(work / "client.pub", server.keys)
        os.chmod(server.keys, 0o644)
        atexit.register(server.keys.unlink, True)
        server.start()
        stack.callback(server.stop)
        yield server


@pytest.fixture
def known_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh session known_hosts for one test (the CLI reads CLONEBAY_KNOWN_HOSTS)."""
    path = tmp_path / "known_hosts"
    monkeypatch.setenv("CLONEBAY_KNOWN_HOSTS", str(path))
    return path
