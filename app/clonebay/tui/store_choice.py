"""What the technician picked on the "Where are the images?" screen, as one value: a folder of
this machine, a partition of an attached disk, or a network share with its credentials.

A network store is built from the form's fields into a store URL (engine/stores/url.py) and
parsed there, so the TUI accepts exactly what ``clonebay save smb://...`` accepts and refuses a
bad host or port in the same words. A store URL names an image inside the store; the TUI's
choice names a folder, so the URL carries a placeholder image name (``PLACEHOLDER``) that is
never used: only ``url.root`` (what is mounted) and ``url.folder`` (the folder in it) are.

Passwords stay in this value, in memory, for the running session (Services remembers the
choices): they are never written to disk nor shown; ``repr`` leaves them out.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from clonebay.engine import stores
from clonebay.errors import UsageError

PLACEHOLDER = "_"  # the image name the URL needs and the TUI never uses
DEFAULT_PORTS = {"smb": 445, "nfs": 2049, "sftp": 22}

AcceptKey = Callable[[str, list[str]], bool]  # (server, fingerprints) -> trust it?


class Kind(enum.Enum):
    FOLDER = "folder"  # a folder of this machine (--image-dir, the demo's images)
    DISK = "disk"  # a partition of an attached disk
    SMB = "smb"
    NFS = "nfs"
    SFTP = "sftp"


NETWORK = (Kind.SMB, Kind.NFS, Kind.SFTP)


@dataclass(frozen=True)
class StoreChoice:
    """One store. ``path`` is the folder for FOLDER; ``url`` the store URL for the others."""

    kind: Kind
    title: str  # how the lists name it: "/dev/sdb1 IMAGES (ext4)", "smb://ana@nas/images/pcs"
    path: str = ""
    url: stores.StoreURL | None = None
    credentials: stores.Credentials = field(default_factory=stores.Credentials)
    smb1: bool = False
    device: str = ""  # DISK: the partition

    @property
    def key(self) -> str:
        """The same store whatever the password: what the session remembers it by."""
        return self.path if self.url is None else self.url.text

    @property
    def folder(self) -> str:
        """The folder inside the mounted store ("" for its top)."""
        return "" if self.url is None else self.url.folder

    def access(self, job_devices: tuple[str, ...], accept: AcceptKey | None) -> stores.Access:
        return stores.Access(
            credentials=self.credentials,
            accept_host_key=accept,
            smb1=self.smb1,
            job_devices=job_devices,
        )


def folder_choice(path: str) -> StoreChoice:
    return StoreChoice(Kind.FOLDER, f"folder {path}", path=path)


def disk_choice(info: stores.StoreInfo) -> StoreChoice:
    """A partition from ``stores.list_local``, named by its device node: the row the technician
    picked, even when another stick has the same label."""
    url = stores.parse(f"disk:{info.device}/{PLACEHOLDER}")
    label = f" {info.label}" if info.label else ""
    return StoreChoice(
        Kind.DISK, f"{info.device}{label} ({info.fstype})", url=url, device=info.device
    )


@dataclass(frozen=True)
class NetworkFields:
    """The network form's fields as typed (``root``: the SMB share, the NFS export path)."""

    kind: Kind
    host: str
    root: str = ""
    folder: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    domain: str = ""
    port: str = ""
    identity: str = ""
    smb1: bool = False


def network_choice(f: NetworkFields) -> StoreChoice:
    """The form's fields -> a StoreChoice; UsageError saying which field is wrong."""
    host = f.host.strip()
    if not host:
        raise UsageError("give the server's name or IP address")
    if any(c in host for c in "/@ "):
        raise UsageError(f"{host!r} is not a server name (no '/', '@' or spaces)")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    port = f.port.strip()
    if port and not port.isdigit():
        raise UsageError(f"the port must be a number, not {port!r}")
    folder = "/".join(quote(p) for p in f.folder.split("/") if p)
    user = f.user.strip()
    if f.kind is Kind.SMB:
        share = f.root.strip().strip("/")
        if not share or "/" in share:
            raise UsageError("give the share's name (one word, as in \\\\server\\share)")
        who = (quote(f.domain.strip()) + ";" if f.domain.strip() else "") + quote(user)
        path = "/".join(x for x in (quote(share), folder) if x)
        text = f"smb://{who + '@' if user else ''}{host}{':' + port if port else ''}/{path}"
    elif f.kind is Kind.NFS:
        export = "/".join(quote(p) for p in f.root.split("/") if p)
        if not export:
            raise UsageError("give the export's path on the server (e.g. /srv/images)")
        path = "/".join(x for x in (export, folder) if x)
        text = f"nfs://{host}{':' + port if port else ''}/{path}"
    else:
        if not user:
            raise UsageError("give the user name to log in as on the SSH server")
        text = f"sftp://{quote(user)}@{host}{':' + port if port else ''}/{folder}"
    url = stores.parse(text.rstrip("/") + "/" + PLACEHOLDER)
    password = f.password if f.password or f.kind is Kind.SMB else None
    creds = stores.Credentials(
        user=user, password=password, domain=f.domain.strip(), identity=f.identity.strip()
    )
    return StoreChoice(
        f.kind, url.where + (f"/{url.folder}" if url.folder else ""), url=url,
        credentials=creds, smb1=f.smb1 and f.kind is Kind.SMB,
    )  # fmt: skip


def fields_of(choice: StoreChoice) -> NetworkFields:
    """A remembered network choice back into the form's fields (to edit it)."""
    url = choice.url
    assert url is not None
    creds = choice.credentials
    port = "" if url.port == DEFAULT_PORTS[url.kind] else str(url.port)
    root = url.root.strip("/") if url.kind == "smb" else url.root
    folder = url.folder
    if url.kind == "nfs":  # NFS mounts the folder itself: the export path holds it all
        root, folder = url.root, ""
    elif url.kind == "sftp" and url.root == "~":
        folder = "~/" + folder
    return NetworkFields(
        Kind(url.kind), url.host, root, folder, creds.user, creds.password or "",
        creds.domain, port, creds.identity, choice.smb1,
    )  # fmt: skip
