"""A NAS for the live system's store tests: Samba's smbd and NFS-Ganesha (with rpcbind for NFSv3)
running in a network namespace of their own, where QEMU runs too, so the guest's user-mode
network reaches them at 10.0.2.2 (QEMU's address for the host's loopback, here the namespace's).

Each server runs in a mount namespace with its own /run (rpcbind's and Ganesha's sockets) and,
for smbd, its own /etc/passwd and /etc/group holding the share's user; the host's accounts and
services are never touched. ``restart_smb``/``restart_nfs`` change what the server speaks (an
SMB1-only NAS, an NFSv3-only server) for the cases that need it. A small ext4 image mounted in
smbd's namespace is the share that fills up.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

USER = "tech"
PASSWORD = "Nas-pw-" + secrets.token_hex(4)
UID = 42421
GUEST_HOST = "10.0.2.2"


def _sh(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True, **kw)  # type: ignore[call-overload, no-any-return]


@dataclass
class Nas:
    work: Path
    namespace: str = field(default_factory=lambda: f"cbnas-{secrets.token_hex(3)}")
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def images(self) -> Path:
        return self.work / "share"

    @property
    def public(self) -> Path:
        return self.work / "public"

    @property
    def small(self) -> Path:
        return self.work / "small-mnt"

    @property
    def nfs_export(self) -> Path:
        return self.work / "nfs"

    def start(self) -> None:
        _sh(["ip", "netns", "add", self.namespace])
        _sh(["ip", "-n", self.namespace, "link", "set", "lo", "up"])
        for folder in (self.images, self.public, self.small, self.nfs_export):
            folder.mkdir(mode=0o777, exist_ok=True)
            folder.chmod(0o777)
        self.work.chmod(0o755)
        small = self.work / "small.img"
        with open(small, "wb") as f:
            f.truncate(40 << 20)
        _sh(["mkfs.ext4", "-q", str(small)])
        self._accounts()
        self.restart_smb("SMB2_10", "SMB3_11")
        self.restart_nfs("3, 4")

    def stop(self) -> None:
        for name in list(self.processes):
            self.kill(name)
        subprocess.run(["ip", "netns", "del", self.namespace], check=False)

    # --- Samba -------------------------------------------------------------------------------

    def _accounts(self) -> None:
        for name, line in (
            ("passwd", f"{USER}:x:{UID}:{UID}::{self.work}:/bin/sh"),
            ("group", f"{USER}:x:{UID}:"),
        ):
            text = Path(f"/etc/{name}").read_text(encoding="utf-8")
            (self.work / name).write_text(text.rstrip("\n") + f"\n{line}\n", encoding="utf-8")

    def _smb_conf(self, low: str, high: str) -> Path:
        state = self.work / "samba"
        for sub in ("lock", "state", "cache", "private", "pid", "ncalrpc"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        conf = self.work / "smb.conf"
        conf.write_text(
            f"""[global]
    server role = standalone server
    server min protocol = {low}
    server max protocol = {high}
    map to guest = Bad User
    lock directory = {state / "lock"}
    state directory = {state / "state"}
    cache directory = {state / "cache"}
    private dir = {state / "private"}
    pid directory = {state / "pid"}
    ncalrpc dir = {state / "ncalrpc"}
    passdb backend = tdbsam:{state / "private" / "passdb.tdb"}
    smb ports = 445
    interfaces = lo
    bind interfaces only = no
    disable netbios = yes
    load printers = no
    printing = bsd
    printcap name = /dev/null
    log file = {self.work / "smbd.log"}
    log level = 1
    server signing = auto
    ntlm auth = ntlmv2-only

[images]
    path = {self.images}
    valid users = {USER}
    read only = no
    force user = root

[public]
    path = {self.public}
    guest ok = yes
    guest only = yes
    read only = no
    force user = root

[small]
    path = {self.small}
    valid users = {USER}
    read only = no
    force user = root
""",
            encoding="utf-8",
        )
        return conf

    def restart_smb(self, low: str, high: str) -> None:
        """(Re)start smbd speaking dialects ``low`` to ``high`` (NT1 = SMB1 only)."""
        self.kill("smbd")
        conf = self._smb_conf(low, high)
        binds = " && ".join(f"mount --bind {self.work / n} /etc/{n}" for n in ("passwd", "group"))
        script = (
            f"mount -t tmpfs none /run && {binds}"
            f" && mount -o loop {self.work / 'small.img'} {self.small} && chmod 777 {self.small}"
            f' && (printf \'%s\\n%s\\n\' "$PW" "$PW" | smbpasswd -c {conf} -s -a {USER})'
            f" && exec smbd --foreground --no-process-group -s {conf}"
        )
        self._start("smbd", script, {"PW": PASSWORD})
        self._wait_port(445)

    # --- NFS ---------------------------------------------------------------------------------

    def restart_nfs(self, protocols: str) -> None:
        """(Re)start Ganesha with rpcbind, exporting ``nfs_export`` as /images over
        ``protocols`` ("3, 4" or "3")."""
        self.kill("nfs")
        conf = self.work / "ganesha.conf"
        conf.write_text(
            f"""NFS_CORE_PARAM {{
    Protocols = {protocols}; NFS_Port = 2049; Enable_RQUOTA = false;
}}
NFSV4 {{ Graceless = true; RecoveryBackend = fs; }}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1; Path = {self.nfs_export}; Pseudo = /images; Access_Type = RW;
    Squash = No_Root_Squash; Protocols = {protocols}; Transports = TCP; SecType = sys;
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = WARN; }}
""",
            encoding="utf-8",
        )
        script = (
            "mount -t tmpfs none /run && mkdir -p /run/ganesha /run/rpcbind"
            " && (rpcbind -w -f &) && sleep 0.5"
            f" && exec ganesha.nfsd -F -f {conf} -L {self.work / 'ganesha.log'}"
            f" -p {self.work / 'ganesha.pid'}"
        )
        self._start("nfs", script, {})
        self._wait_port(2049)

    # --- plumbing ----------------------------------------------------------------------------

    def _start(self, name: str, script: str, env: dict[str, str]) -> None:
        log = open(self.work / f"{name}.out", "ab")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, "unshare", "-m", "--propagation", "private",
             "sh", "-c", script],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
            start_new_session=True,
        )  # fmt: skip

    def kill(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)

    def _wait_port(self, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["ip", "netns", "exec", self.namespace, "ss", "-ltnH", f"sport = :{port}"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if out.stdout.strip():
                return
            time.sleep(0.3)
        logs = "".join(p.read_text(errors="replace")[-2000:] for p in self.work.glob("*.out"))
        raise RuntimeError(f"nothing listens on port {port} in {self.namespace}:\n{logs}")
