"""Image stores: the folders where images are read and written, wherever they are.

A store is a partition of an attached disk (stores/local.py), an SMB or NFS share (network.py)
or a folder on an SSH server (sftp.py). Every command that takes an image path takes a store URL
too (stores/url.py): ``image_location`` mounts the store for the job, yields the image's local
path inside the mount, and takes the mount down when the job ends, however it ends. Plain paths
pass through untouched, so the engine's jobs only ever see local paths.

What a store may need to ask (a password, whether to trust an SSH host key) is asked through
``Access``, which each front end fills in: the CLI with a terminal prompt, the TUI with its
forms. What a job reads or writes (``Access.job_devices``) can never be a store: the guard in
local.py refuses a store partition on the source or target disk before anything is mounted.

Store full: ``check_room`` compares the free space with the image's estimated size before a
save starts; a store that fills up anyway stops the save with StoreFullError (the writer's
ENOSPC, EDQUOT or EFBIG), and the save removes its incomplete image (engine/save.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from clonebay.engine.stores.credentials import AskPassword, Credentials, gather
from clonebay.engine.stores.listing import StoreInfo, find_images, list_local
from clonebay.engine.stores.local import mounted, open_volume
from clonebay.engine.stores.mounting import keep, release
from clonebay.engine.stores.network import mount_nfs, mount_smb
from clonebay.engine.stores.sftp import AcceptKey, mount_sftp
from clonebay.engine.stores.space import check_room, free_bytes
from clonebay.engine.stores.url import StoreURL, is_store_url, parse
from clonebay.errors import StoreError

__all__ = [
    "Access",
    "Credentials",
    "StoreInfo",
    "StoreURL",
    "check_room",
    "find_images",
    "free_bytes",
    "gather",
    "image_location",
    "is_store_url",
    "keep",
    "list_local",
    "mounted_store",
    "parse",
    "release",
]


@dataclass(frozen=True)
class Access:
    """How a job reaches its stores: credentials, and the front end's questions."""

    credentials: Credentials = field(default_factory=Credentials)
    ask_password: AskPassword | None = None
    accept_host_key: AcceptKey | None = None
    host_key: str = ""  # a pinned SSH host key fingerprint, SHA256:...
    smb1: bool = False
    job_devices: tuple[str, ...] = ()

    def for_devices(self, *devices: str) -> Access:
        return replace(self, job_devices=self.job_devices + tuple(d for d in devices if d))


@contextlib.contextmanager
def image_location(text: str, access: Access, *, write: bool) -> Iterator[str]:
    """The local path of the image ``text`` names, its store mounted meanwhile. With
    ``write`` the image's folder is made (and must be writable)."""
    if not is_store_url(text):
        yield text
        return
    url = parse(text)
    with mounted_store(url, access, write=write) as root:
        path = root / url.inside.strip("/")
        if write:
            _make_folder(url, path.parent)
        yield str(path)


@contextlib.contextmanager
def mounted_store(url: StoreURL, access: Access, *, write: bool) -> Iterator[Path]:
    """The store's top folder (what the URL's ``inside`` is relative to), mounted."""
    if url.kind == "disk":
        volume = open_volume(url.selector, access.job_devices)
        with mounted(volume, write=write) as root:
            yield root
        return
    creds = access.credentials.with_url(url.user, url.domain)
    if url.kind == "nfs":
        with mount_nfs(url, write=write) as root:
            yield root
        return
    if url.kind == "smb" and creds.user and creds.password is None:
        creds = _ask(access, creds, f"password for {creds.user} on //{url.host}/{url.root}")
    if url.kind == "smb":
        with mount_smb(url, creds, write=write, smb1=access.smb1) as root:
            yield root
        return
    if creds.password is None and not creds.identity and access.ask_password and not _has_keys():
        creds = _ask(access, creds, f"password for {url.user}@{url.host}")
    with mount_sftp(
        url, creds, write=write, pinned=access.host_key, accept=access.accept_host_key
    ) as root:
        yield root


def _ask(access: Access, creds: Credentials, prompt: str) -> Credentials:
    if access.ask_password is None:
        raise StoreError(
            f"no {prompt}: give it with --credentials FILE or CLONEBAY_PASSWORD (no terminal"
            " to ask on)"
        )
    answer = access.ask_password(prompt)
    if answer is None:
        raise StoreError(f"no {prompt} was given")
    return replace(creds, password=answer)


def _has_keys() -> bool:
    """An agent or a default key file: sshfs will try those before any password."""
    if os.environ.get("SSH_AUTH_SOCK"):
        return True
    home = Path(os.path.expanduser("~/.ssh"))
    return any((home / name).exists() for name in ("id_ed25519", "id_ecdsa", "id_rsa"))


def _make_folder(url: StoreURL, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".clonebay-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = {
            errno.EROFS: "the store is read-only",
            errno.EACCES: "permission denied for this user",
            errno.EPERM: "permission denied for this user",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise StoreError(
            f"{url.where}: cannot write into {url.folder or 'its top folder'} ({reason})"
        ) from exc
