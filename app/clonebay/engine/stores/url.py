"""Store URLs: where an image lives, written wherever an image path is accepted.

    smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/DIR/NAME.image  a Windows or Samba share (no USER: guest)
    nfs://HOST[:PORT]/EXPORT/DIR/NAME.image               an NFS export (v4, falling back to v3)
    sftp://USER@HOST[:PORT]/DIR/NAME.image                an SSH server (/~/DIR: the home folder)
    disk:LABEL=Images/DIR/NAME.image                      a partition of an attached disk by label,
    disk:UUID=0123-ABCD/DIR/NAME.image                    by filesystem UUID,
    disk:/dev/sdb2/DIR/NAME.image                         or by device node

Anything else is a plain local path and passes through untouched. A URL names the store (what is
mounted) and the path of the image inside it; the image's parent folder is what a job needs.
Passwords are never part of a URL (``smb://user:secret@...`` is refused): they come from
``--credentials FILE``, ``CLONEBAY_PASSWORD`` or a prompt (stores/credentials.py).
Percent-escapes (``%20``) are decoded in user names and paths.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from dataclasses import dataclass
from urllib.parse import unquote

from clonebay.errors import UsageError

KINDS = ("smb", "nfs", "sftp", "disk")
DEFAULT_PORTS = {"smb": 445, "nfs": 2049, "sftp": 22}

_NETWORK = re.compile(r"^(?P<kind>smb|nfs|sftp)://(?P<authority>[^/]*)(?P<path>/.*)?$")
_AUTHORITY = re.compile(
    r"^(?:(?P<userinfo>[^@]*)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\[\]]+)(?::(?P<port>\d+))?$"
)
_SELECTOR = re.compile(r"^(?P<key>LABEL|UUID|PARTLABEL|PARTUUID)=(?P<value>[^/]+)(?P<path>/.*)?$")


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL. ``root`` is what is mounted (``SHARE`` for SMB, the image's folder for
    NFS, ``/`` or ``~`` for SFTP, the partition for disk stores); ``inside`` is the image's
    path below it."""

    kind: str
    text: str
    host: str = ""
    port: int = 0
    user: str = ""
    domain: str = ""
    root: str = ""
    inside: str = ""
    selector: str = ""  # disk stores: "LABEL=x", "UUID=x", "/dev/sdb2"

    @property
    def name(self) -> str:
        """The image's own name (last component)."""
        return posixpath.basename(self.inside.rstrip("/")) or self.inside

    @property
    def folder(self) -> str:
        """The image's folder inside the store ("" for the store's top)."""
        return posixpath.dirname(self.inside.rstrip("/")).strip("/")

    @property
    def where(self) -> str:
        """The store as a technician reads it, without the image: "smb://srv/images"."""
        if self.kind == "disk":
            return f"disk:{self.selector}"
        port = f":{self.port}" if self.port != DEFAULT_PORTS[self.kind] else ""
        user = f"{self.user}@" if self.user else ""
        return f"{self.kind}://{user}{self.host}{port}/{self.root.strip('/')}"


def is_store_url(text: str) -> bool:
    return text.startswith(("smb://", "nfs://", "sftp://", "disk:"))


def parse(text: str) -> StoreURL:
    """A store URL -> StoreURL; UsageError naming what is wrong with it."""
    if text.startswith("disk:"):
        return _parse_disk(text)
    match = _NETWORK.match(text)
    if match is None:
        raise UsageError(
            f"{text!r} is not a store URL ({', '.join(k + '://' for k in KINDS[:3])} or disk:)"
        )
    kind = match["kind"]
    authority = _AUTHORITY.match(match["authority"])
    if authority is None or not authority["host"]:
        raise UsageError(f"{text}: no host in the URL (expected {kind}://[USER@]HOST/...)")
    userinfo = unquote(authority["userinfo"] or "")
    if ":" in userinfo:
        raise UsageError(
            f"{text}: a password in the URL would be seen by every process and kept in shell"
            " history; give it with --credentials FILE, CLONEBAY_PASSWORD or at the prompt"
        )
    domain, user = "", userinfo
    if ";" in userinfo:
        if kind != "smb":
            raise UsageError(f"{text}: a DOMAIN; prefix is for smb:// URLs only")
        domain, user = userinfo.split(";", 1)
    port = int(authority["port"] or DEFAULT_PORTS[kind])
    if not 0 < port < 65536:
        raise UsageError(f"{text}: port {port} is out of range")
    path = _clean_path(text, unquote(match["path"] or "/"))
    host = authority["host"].strip("[]")
    if kind == "sftp" and not user:
        raise UsageError(f"{text}: an sftp:// URL needs a user (sftp://USER@HOST/DIR/NAME)")
    if kind == "smb":
        share, _, inside = path.strip("/").partition("/")
        if not share:
            raise UsageError(f"{text}: no share (expected smb://[USER@]HOST/SHARE/DIR/NAME)")
        root = share
    elif kind == "sftp":  # the whole server (or home) is mounted: folders can be made
        home = path == "/~" or path.startswith("/~/")
        root, inside = ("~", path[3:]) if home else ("/", path.strip("/"))
    else:  # NFS mounts the image's folder: an export's top may lie anywhere above it
        folder, inside = posixpath.split(path.rstrip("/"))
        root = folder or "/"
    if not inside:
        raise UsageError(f"{text}: the URL names a store but no image in it (add /NAME.image)")
    return StoreURL(kind, text, host, port, user, domain, root, inside)


def _clean_path(text: str, path: str) -> str:
    parts = path.split("/")
    if any(part in (".", "..") for part in parts):
        raise UsageError(f"{text}: '.' and '..' are not allowed in a store path")
    if "\0" in path:
        raise UsageError(f"{text}: NUL byte in the path")
    return re.sub("/+", "/", path)


def _parse_disk(text: str) -> StoreURL:
    rest = text[len("disk:") :]
    match = _SELECTOR.match(rest)
    if match is not None:
        selector, path = f"{match['key']}={unquote(match['value'])}", match["path"] or ""
    elif rest.startswith("/dev/"):
        selector, path = _split_device(text, rest)
    else:
        raise UsageError(
            f"{text}: a disk store is disk:LABEL=NAME/..., disk:UUID=ID/... or disk:/dev/NODE/..."
        )
    inside = _clean_path(text, path).strip("/")
    if not inside:
        raise UsageError(f"{text}: the URL names a store but no image in it (add /NAME.image)")
    return StoreURL("disk", text, root="/", inside=inside, selector=selector)


def _split_device(text: str, rest: str) -> tuple[str, str]:
    """``/dev/sdb2/dir/x`` -> (``/dev/sdb2``, ``/dir/x``): the longest leading part that is a
    block device (``/dev/disk/by-label/X/...`` works too)."""
    parts = rest.split("/")
    for cut in range(len(parts), 2, -1):
        candidate = "/".join(parts[:cut])
        try:
            if stat.S_ISBLK(os.stat(candidate).st_mode):
                return candidate, "/" + "/".join(parts[cut:])
        except OSError:
            continue
    raise UsageError(f"{text}: no block device at the start of {rest}")
