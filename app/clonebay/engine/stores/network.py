"""Network shares with the kernel's clients: SMB/CIFS (mount.cifs) and NFS (mount.nfs).

SMB: dialects 2.1 to 3.1.1 are negotiated (``vers=default``), with encryption (``seal``) asked
for first and dropped when the server does not offer it; SMB1 (``vers=1.0``) only when the
technician asks (``--smb1``: an old NAS), never as a silent fallback. User, domain and password
go to mount.cifs in a 0600 credentials file, never on its command line; no user means guest.
``soft`` and a 10 s echo interval turn a lost server into I/O errors within about a minute
instead of a hang.

NFS: 4.1 first (one TCP port, no rpcbind; not 4.2, see NFS_VERSIONS), then 4.0, then v3.
``soft,timeo=100,retrans=3`` bound how long a lost server blocks a read or a write (~40 s),
after which the job fails with an I/O error and says the target is incomplete. The folder of
the image is what is mounted (NFS can mount any folder of an export), so it must exist.

Connection set-up failures that may pass (a timeout, a reset connection) are tried
again up to ``ATTEMPTS`` times, each try logged; wrong passwords, missing shares and refused
dialects are reported at once, in plain words (``explain_smb``, ``explain_nfs``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from clonebay.engine.stores.credentials import Credentials, secret_file
from clonebay.engine.stores.mounting import Failure, attempt, mount_dir, unmount
from clonebay.engine.stores.url import StoreURL
from clonebay.errors import StoreError

log = logging.getLogger(__name__)

ATTEMPTS = 3
_TRANSIENT = ("timed out", "connection reset")
# NFS 4.2 is never asked for: its READ_PLUS read back zeros for every file from NFS-Ganesha 4.3
# with Linux 6.12's client here (the read-back check caught it); 4.1 reads with plain READ.
NFS_VERSIONS = ("4.1", "4.0", "3")
# mount.cifs prints "mount error(N): ...": the kernel's errno for the failed mount
_SMB_ERRORS = {
    13: "the server refused the user name or password (or guest access) for this share",
    2: "the share does not exist on the server (or the path inside it)",
    6: "the share does not exist on the server",
    95: "the server refused every SMB dialect tried",
    112: "the host is down",
    113: "no route to the host (unreachable)",
    111: "the host refuses SMB connections (port closed: is file sharing on?)",
    110: "the host did not answer (timed out)",
    115: "the host did not answer (timed out)",
    22: "the server refused the mount options (often: a dialect it does not speak)",
}


def _smb_ladder(smb1: bool, guest: bool) -> list[tuple[str, list[str]]]:
    """The dialect and encryption options to try, in order. A guest session has no session key,
    so it cannot be encrypted: no ``seal`` for it."""
    if smb1:
        return [("SMB1 (NT1)", ["vers=1.0"])]
    plain = ("SMB 2.1-3.1.1", ["vers=default"])
    return [plain] if guest else [("SMB 2.1-3.1.1 encrypted", ["vers=default", "seal"]), plain]


@contextlib.contextmanager
def mount_smb(url: StoreURL, creds: Credentials, *, write: bool, smb1: bool) -> Iterator[Path]:
    """The share's top folder, mounted for the job."""
    if smb1:
        log.warning("SMB1 asked for: an old, insecure protocol (no encryption, weak signing)")
    where = mount_dir(f"smb-{url.host}-{url.root}")
    try:
        lines = [f"username={creds.user}", f"password={creds.password or ''}"]
        if creds.domain:
            lines.append(f"domain={creds.domain}")
        with secret_file(lines) as cred_file:
            auth = [f"credentials={cred_file}"] if creds.user else ["guest"]
            _mount_ladder(url, where, auth, write=write, smb1=smb1)
        yield where
    finally:
        unmount(where)


def _mount_ladder(url: StoreURL, where: Path, auth: list[str], *, write: bool, smb1: bool) -> None:
    tried: list[str] = []
    last: Failure | None = None
    for label, dialect in _smb_ladder(smb1, guest=auth == ["guest"]):
        options = [
            *auth,
            *dialect,
            "rw" if write else "ro",
            f"port={url.port}",
            "soft",
            "echo_interval=10",
            "noserverino",
            "uid=0",
            "gid=0",
        ]
        argv = ["mount.cifs", f"//{url.host}/{url.root}", str(where), "-o", ",".join(options)]
        last = _with_retries(argv, f"mounting //{url.host}/{url.root}")
        if last is None:
            return
        tried.append(label)
        code = _smb_code(last.text)
        if code not in (95, 22, 5, 13, 11, 112) or (code == 13 and "seal" not in dialect):
            break  # not a dialect or encryption problem: more dialects will not help
    assert last is not None
    raise StoreError(explain_smb(url, last, tried, reachable=_answers(url.host, url.port)))


def _answers(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port (tells a server that refused
    our dialects apart from one that is down)."""
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


def _smb_code(text: str) -> int:
    marker = "mount error("
    at = text.find(marker)
    if at < 0:
        return -1
    digits = text[at + len(marker) :].split(")", 1)[0]
    return int(digits) if digits.isdigit() else -1


def explain_smb(
    url: StoreURL, failure: Failure, tried: list[str], *, reachable: bool = False
) -> str:
    """A mount.cifs failure in plain words, naming the share and what was tried. A server that
    accepts connections but drops every SMB2/3 negotiation looks "down" to the kernel (error
    112): with the port answering, that is an SMB1-only server."""
    code = _smb_code(failure.text)
    share = f"//{url.host}/{url.root}"
    if "could not resolve address" in failure.text.lower() or "resolve" in failure.text.lower():
        return f"{share}: the name {url.host} does not resolve (check the name or use its IP)"
    said = [ln for ln in failure.text.strip().splitlines() if "mount error" in ln]
    reason = _SMB_ERRORS.get(code, said[-1] if said else failure.text.strip()[:200])
    dialects = f"(tried: {'; '.join(tried)})"
    if code in (95, 22) or (code in (112, 5, 11) and reachable and "SMB1 (NT1)" not in tried):
        reason = (
            f"the server answers on port {url.port} but refused every SMB dialect tried"
            f" {dialects}; an old NAS may speak only SMB1: add --smb1 (insecure)"
        )
    elif code == 11:
        reason = f"the server refused the session {dialects}"
    return f"{share}: {reason}"


@contextlib.contextmanager
def mount_nfs(url: StoreURL, *, write: bool) -> Iterator[Path]:
    """The image's folder on the server, mounted for the job: NFS 4.1, 4.0, then v3."""
    where = mount_dir(f"nfs-{url.host}-{url.root}")
    try:
        common = ["rw" if write else "ro", "soft", "timeo=100", "retrans=3"]
        remote = f"{url.host}:{url.root}"
        failure: Failure | None = None
        said: list[str] = []
        for version in NFS_VERSIONS:
            options = [*common, f"vers={version}"]
            if version != "3":
                options.append(f"port={url.port}")
            argv = ["mount.nfs", remote, str(where), "-o", ",".join(options)]
            failure = _with_retries(argv, f"mounting {remote} (NFS {version})")
            if failure is None:
                log.info("%s mounted with NFS %s", remote, version)
                break
            log.info("NFS %s mount of %s failed (%s)", version, remote, failure.text.strip())
            said.append(failure.text)
        if failure is not None:  # all the versions said: 4.x says "no such file", 3 "denied"
            raise StoreError(explain_nfs(url, Failure(failure.code, "\n".join(said))))
        yield where
    finally:
        unmount(where)


def explain_nfs(url: StoreURL, failure: Failure) -> str:
    text = failure.text.lower()
    remote = f"{url.host}:{url.root}"
    if "no such file" in text:  # before "access denied": v3 says that of a missing folder too
        return f"{remote}: the folder is not there or not exported (NFS mounts existing folders)"
    if "access denied" in text or "permission denied" in text:
        return f"{remote}: the server does not export this folder to this machine (access denied)"
    if "resolve" in text or "name or service" in text:
        return f"{remote}: the name {url.host} does not resolve (check the name or use its IP)"
    if "refused" in text or "timed out" in text or "unreachable" in text:
        return f"{remote}: no NFS server answers on {url.host} (unreachable, or not running)"
    said = failure.text.strip().splitlines()
    return f"{remote}: {said[-1] if said else 'mount failed'}"


def _with_retries(argv: list[str], what: str) -> Failure | None:
    failure: Failure | None = None
    for n in range(1, ATTEMPTS + 1):
        failure = attempt(argv, what=what)
        if failure is None or not any(t in failure.text.lower() for t in _TRANSIENT):
            return failure
        log.warning("%s: try %d of %d failed (%s)", what, n, ATTEMPTS, failure.text.strip())
        time.sleep(min(2.0 * n, 5.0))
    return failure
