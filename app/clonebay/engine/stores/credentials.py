"""Who clonebay is on a network store, and how it learns the password without showing it.

Passwords never appear on a command line (every process could read them in /proc) nor in a URL,
a log, an image or JSON output. They come, first found wins, from
  1. ``--credentials FILE``: ``key=value`` lines, the format mount.cifs reads too:
     ``username=``, ``password=``, ``domain=`` (``user``/``pass``/``workgroup`` accepted), and
     ``identity=`` for an SSH key file; ``#`` comments; the file must not be readable by others
     when it holds a password;
  2. the ``CLONEBAY_PASSWORD`` environment variable;
  3. a prompt, when the front end can ask (a terminal, the TUI's form).
A user in the URL wins over one in the file. Credentials live in memory for the session; a
front end writes them to disk only when the technician asks.

Handing a password to a mount helper goes through a file of mode 0600 under /run/clonebay
(mount.cifs ``credentials=``) or a pipe (sshfs ``password_stdin``), never argv.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from clonebay.errors import UsageError

PASSWORD_VARIABLE = "CLONEBAY_PASSWORD"
RUN_DIR = Path("/run/clonebay")
_KEYS = {
    "username": "user",
    "user": "user",
    "password": "password",
    "pass": "password",
    "domain": "domain",
    "workgroup": "domain",
    "identity": "identity",
}

AskPassword = Callable[[str], str | None]


@dataclass(frozen=True)
class Credentials:
    user: str = ""
    password: str | None = field(default=None, repr=False)
    domain: str = ""
    identity: str = ""  # an SSH private key file

    def with_url(self, user: str, domain: str) -> Credentials:
        return replace(self, user=user or self.user, domain=domain or self.domain)


def read_file(path: str) -> Credentials:
    """A credentials file -> Credentials; UsageError naming the line that is wrong."""
    try:
        info = os.stat(path)
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the credentials file {path}: {exc}") from exc
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        name = _KEYS.get(key.strip().lower())
        if not sep or name is None:
            raise UsageError(
                f"{path} line {number}: expected username=, password=, domain= or identity="
            )
        values[name] = value.strip()
    if "password" in values and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(
            f"{path} holds a password and other users may read it: chmod 600 {path} first"
        )
    return Credentials(
        user=values.get("user", ""),
        password=values.get("password"),
        domain=values.get("domain", ""),
        identity=values.get("identity", ""),
    )


def gather(path: str | None) -> Credentials:
    """The credentials a command line gives: the file, then ``CLONEBAY_PASSWORD``."""
    creds = read_file(path) if path else Credentials()
    if creds.password is None and os.environ.get(PASSWORD_VARIABLE) is not None:
        creds = replace(creds, password=os.environ[PASSWORD_VARIABLE])
    return creds


@contextlib.contextmanager
def secret_file(lines: list[str]) -> Iterator[str]:
    """A 0600 file under /run/clonebay holding ``lines`` for a mount helper, removed after."""
    RUN_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix="cred-", dir=RUN_DIR)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        yield name
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
