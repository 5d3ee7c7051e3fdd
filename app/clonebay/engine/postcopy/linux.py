"""A Linux system's own identity, changed offline in its root filesystem.

When the copy becomes another machine (a new host name was given):

- /etc/hostname gets the new name, and /etc/hosts names it where it named the old one (the
  127.0.1.1 line Debian writes, and any other whole-word use of the old name);
- /etc/machine-id is emptied: systemd makes a new id at the first boot and writes it there
  (machine-id(5): an empty file is how an image meant for many machines ships); a separate
  /var/lib/dbus/machine-id file is removed (a symlink to /etc/machine-id is kept). DHCP servers
  that key leases on the machine-id (systemd-networkd's DUID) then give each clone its own;
- the SSH host keys are replaced by new ones of the same types, made here with ssh-keygen (a
  Debian sshd does not make missing keys at boot: it would not start), so no two clones share
  a host key and a client that knew the source warns;
- persistent net rules (/etc/udev/rules.d/70-persistent-net.rules) are removed, so the new
  machine's network cards are not renamed eth1, eth2 behind the old ones' names.

Every edit is read back from the file after it is written.
"""

from __future__ import annotations

import re
from pathlib import Path

from clonebay.engine.postcopy.changes import Change
from clonebay.engine.postcopy.systems import inside
from clonebay.errors import UsageError
from clonebay.system.run import run

HOSTNAME_RE = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
NET_RULES = ("etc/udev/rules.d/70-persistent-net.rules",)
KEY_TYPES = ("rsa", "ecdsa", "ed25519", "dsa")


def check_hostname(name: str) -> str:
    """A single DNS label (RFC 1123): letters, digits and hyphens, 1 to 63 characters."""
    if not HOSTNAME_RE.match(name) or name.isdigit():
        raise UsageError(
            f"{name!r} is not a host name: use 1 to 63 letters, digits and hyphens, not"
            " starting or ending with a hyphen, and not only digits"
        )
    return name


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    back = path.read_text()
    if back != text:
        raise OSError(f"{path}: read back other text than was written")
    return back


def read_hostname(root: Path) -> str:
    try:
        return (root / "etc/hostname").read_text().strip()
    except OSError:
        return ""


def set_hostname(root: Path, where: str, name: str) -> list[Change]:
    """/etc/hostname and /etc/hosts."""
    old = read_hostname(root)
    changes = []
    if old != name:
        _write(inside(root, "etc/hostname"), name + "\n")
        changes.append(Change(where, "hostname", old, name, "read back"))
    hosts = inside(root, "etc/hosts")
    text = hosts.read_text() if hosts.exists() else ""
    new = _hosts_text(text, old, name)
    if new != text:
        _write(hosts, new)
        changes.append(Change(where, "/etc/hosts", old or "(no name)", name, "read back"))
    return changes


def _hosts_text(text: str, old: str, new: str) -> str:
    """The old name replaced by the new one as a whole word; a 127.0.1.1 line added when no
    line names the host (Debian's way for a machine without a fixed address)."""
    lines = text.splitlines()
    out = []
    for line in lines:
        body, _, comment = line.partition("#")
        fields = body.split()
        if old and old != new and len(fields) > 1 and old in fields[1:]:
            names = [new if f == old else f for f in fields[1:]]
            body = "\t".join([fields[0], *dict.fromkeys(names)])
            out.append(body + (f" #{comment}" if comment else ""))
        else:
            out.append(line)
    if not any(new in line.partition("#")[0].split()[1:] for line in out):
        out.append(f"127.0.1.1\t{new}")
    return "\n".join(out) + "\n"


def reset_machine_id(root: Path, where: str) -> list[Change]:
    """Empty /etc/machine-id; remove a separate D-Bus copy."""
    changes = []
    mid = inside(root, "etc/machine-id")
    old = mid.read_text().strip() if mid.exists() else ""
    if old:
        _write(mid, "")
        changes.append(Change(where, "machine-id", old, "(new at first boot)", "read back"))
    dbus = root / "var/lib/dbus/machine-id"
    if dbus.exists() and not dbus.is_symlink():  # a link to /etc/machine-id is right as it is
        dbus = inside(root, "var/lib/dbus/machine-id")
        before = dbus.read_text().strip()
        dbus.unlink()
        if dbus.exists():
            raise OSError(f"{dbus}: still there after removal")
        changes.append(Change(where, "dbus machine-id", before, "(removed)", "gone"))
    return changes


def fingerprint(pub: Path) -> str:
    out = run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)]).stdout.decode()
    return out.split()[1] if len(out.split()) > 1 else ""


def renew_ssh_keys(root: Path, where: str, name: str) -> list[Change]:
    """New SSH host keys of the types the system had."""
    ssh = inside(root, "etc/ssh")
    changes = []
    for kind in KEY_TYPES:
        key = ssh / f"ssh_host_{kind}_key"
        pub = ssh / f"ssh_host_{kind}_key.pub"
        if not (key.exists() or key.is_symlink()):
            continue
        key, pub = inside(root, f"etc/ssh/{key.name}"), inside(root, f"etc/ssh/{pub.name}")
        old = fingerprint(pub) if pub.exists() else ""
        mode = key.stat().st_mode & 0o777
        key.unlink()
        pub.unlink(missing_ok=True)
        argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"root@{name}", "-f", str(key)]
        run(argv)
        key.chmod(mode)
        new = fingerprint(pub)
        if not new or new == old:
            raise OSError(f"{where}: the new {kind} host key could not be read back")
        changes.append(Change(where, f"ssh host key ({kind})", old, new, "ssh-keygen -l"))
    return changes


def clear_net_rules(root: Path, where: str) -> list[Change]:
    changes = []
    for rel in NET_RULES:
        path = root / rel
        if path.exists() or path.is_symlink():
            inside(root, str(Path(rel).parent))
            path.unlink()
            changes.append(Change(where, "persistent net rules", rel, "(removed)", "gone"))
    return changes


def new_identity(root: Path, where: str, name: str) -> list[Change]:
    """All of it, for a system that becomes the machine called ``name``."""
    changes = set_hostname(root, where, name)
    changes += reset_machine_id(root, where)
    changes += renew_ssh_keys(root, where, name)
    changes += clear_net_rules(root, where)
    return changes
