"""SFTP stores: a folder on an SSH server, mounted with sshfs, its host key always checked.

Trust on first use, never blind: before the first connection to HOST:PORT the server's host keys
are fetched (ssh-keyscan) and their SHA256 fingerprints shown; the connection goes on only when
the technician accepts them (the front end asks) or when they match ``--host-key SHA256:...``
(scripts). Accepted keys are remembered in a known_hosts file for the session
(/run/clonebay/known_hosts, on the live system's RAM disk), and sshfs runs with
``StrictHostKeyChecking=yes`` against it: a server whose key changed is refused with a message
that says so, never accepted silently (other tools run ssh with StrictHostKeyChecking=no).

Authentication: a key (``identity=`` in the credentials, ``--identity FILE``, ~/.ssh or the
agent through SSH_AUTH_SOCK) or a password, handed to sshfs on a pipe (``password_stdin``).
Keep-alives (every 5 s, 3 missed = dead) make a lost server an I/O error within ~20 s.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from clonebay.engine.stores.credentials import RUN_DIR, Credentials
from clonebay.engine.stores.mounting import Failure, attempt, mount_dir, unmount
from clonebay.engine.stores.url import StoreURL
from clonebay.errors import StoreError
from clonebay.system import run as runner

log = logging.getLogger(__name__)

KNOWN_HOSTS = Path(os.environ.get("CLONEBAY_KNOWN_HOSTS", str(RUN_DIR / "known_hosts")))
SCAN_DEADLINE = 15

AcceptKey = Callable[[str, list[str]], bool]


@dataclass(frozen=True)
class HostKeys:
    """What ssh-keyscan found: known_hosts lines and their fingerprints (``SHA256:...``)."""

    lines: list[str]
    fingerprints: list[str]


def host_name(url: StoreURL) -> str:
    """The known_hosts name of the server: ``host``, or ``[host]:port`` off port 22."""
    return url.host if url.port == 22 else f"[{url.host}]:{url.port}"


def scan(url: StoreURL) -> HostKeys:
    """The server's host keys now; StoreError when it cannot be reached."""
    try:
        proc = runner.run(
            ["ssh-keyscan", "-p", str(url.port), "-T", str(SCAN_DEADLINE), url.host],
            timeout=SCAN_DEADLINE * 3,
            check=False,
        )
    except Exception as exc:  # a deadline, a missing tool: said with the host
        raise StoreError(f"{url.host}:{url.port}: cannot fetch the SSH host key: {exc}") from exc
    lines = [ln for ln in proc.stdout.decode().splitlines() if ln and not ln.startswith("#")]
    if not lines:
        said = proc.stderr.decode(errors="replace").strip()
        raise StoreError(
            f"{url.host}:{url.port}: no SSH server answered"
            + (f" ({said.splitlines()[-1]})" if said else " (unreachable, or no sshd on that port)")
        )
    return HostKeys(lines, [fingerprint(line) for line in lines])


def fingerprint(line: str) -> str:
    """``host type base64`` -> ``SHA256:...`` (ssh-keygen's own computation)."""
    proc = runner.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", "-"], input_bytes=(line + "\n").encode()
    )
    fields = proc.stdout.decode().split()
    return fields[1] if len(fields) > 1 else ""


def known_lines(name: str) -> list[str]:
    try:
        text = KNOWN_HOSTS.read_text(encoding="utf-8")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if ln.split(" ", 1)[0] == name]


def _remember(name: str, keys: HostKeys) -> None:
    KNOWN_HOSTS.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(KNOWN_HOSTS, "a", encoding="utf-8") as f:
        for line in keys.lines:
            f.write(name + " " + line.split(" ", 1)[1] + "\n")


def trust_host(url: StoreURL, pinned: str, accept: AcceptKey | None) -> None:
    """Make sure the server's key is known and the same as before; the module docstring's rule."""
    name = host_name(url)
    keys = scan(url)
    known = known_lines(name)
    if known:
        remembered = {ln.split(" ", 1)[1] for ln in known}
        if not any(ln.split(" ", 1)[1] in remembered for ln in keys.lines):
            raise StoreError(
                f"the SSH host key of {name} has CHANGED since it was accepted (now"
                f" {', '.join(keys.fingerprints)}): someone may be in the middle, or the server was"
                f" reinstalled. Refusing to connect; if the change is expected, remove its lines"
                f" from {KNOWN_HOSTS}"
            )
        return
    if pinned:
        if pinned not in keys.fingerprints:
            raise StoreError(
                f"the SSH host key of {name} is not the one given with --host-key {pinned}"
                f" (the server shows {', '.join(keys.fingerprints)}); refusing to connect"
            )
    elif accept is None or not accept(name, keys.fingerprints):
        raise StoreError(
            f"the SSH host key of {name} ({', '.join(keys.fingerprints)}) was not accepted:"
            " confirm it at the prompt, or pin it with --host-key SHA256:..."
        )
    _remember(name, keys)


@contextlib.contextmanager
def mount_sftp(
    url: StoreURL, creds: Credentials, *, write: bool, pinned: str, accept: AcceptKey | None
) -> Iterator[Path]:
    """The image's folder on the server, mounted with sshfs for the job."""
    trust_host(url, pinned, accept)
    where = mount_dir(f"sftp-{url.host}")
    remote = "" if url.root == "~" else url.root
    options = [
        "ro" if not write else "rw",
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={KNOWN_HOSTS}",
        "ServerAliveInterval=5",
        "ServerAliveCountMax=3",
        "ConnectTimeout=15",
        "NumberOfPasswordPrompts=1",
        f"Port={url.port}",
    ]
    if creds.identity:
        options.append(f"IdentityFile={creds.identity}")
    if creds.password is not None:
        options.append("password_stdin")
    else:
        options.append("BatchMode=yes")
    log_file = RUN_DIR / f"ssh-{os.getpid()}.log"  # ssh's own messages (sshfs drops them)
    options.append(f"ssh_command=ssh -E {log_file}")
    try:
        argv = ["sshfs", f"{url.user}@{url.host}:{remote}", str(where), "-o", ",".join(options)]
        secret = (creds.password + "\n").encode() if creds.password is not None else None
        failure = attempt(argv, what=f"connecting to {url.host}", input_bytes=secret)
        if failure is not None:
            said = log_file.read_text(errors="replace") if log_file.exists() else ""
            raise StoreError(explain(url, remote, Failure(failure.code, said + failure.text)))
        yield where
    finally:
        log_file.unlink(missing_ok=True)
        unmount(where)


def explain(url: StoreURL, remote: str, failure: Failure) -> str:
    text = failure.text.lower()
    who = f"{url.user}@{url.host}"
    if "identification has changed" in text or "host key verification failed" in text:
        return f"{who}: the SSH host key has CHANGED; refusing to connect (see {KNOWN_HOSTS})"
    if "permission denied" in text:
        return f"{who}: the server refused the password or key (permission denied)"
    if "no such file" in text:
        return f"{who}: the folder {remote or '~'} does not exist on the server"
    if "could not resolve" in text:
        return f"{who}: the name {url.host} does not resolve (check the name or use its IP)"
    if "connection refused" in text:
        return f"{who}: no SSH server on port {url.port} (connection refused)"
    if "timed out" in text or "unreachable" in text or "no route" in text:
        return f"{who}: the host does not answer (unreachable or filtered)"
    last = failure.text.strip().splitlines()[-1] if failure.text.strip() else "sshfs failed"
    return f"{who}: {last}"
