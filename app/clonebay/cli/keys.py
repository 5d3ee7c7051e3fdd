"""The options that give keys for locked volumes, and reading the secrets they ask for.

A secret never goes on the command line (every user sees the process list): ``--key`` and
``--recovery-password`` ask for it on the terminal without echo, or read one line of standard
input when that is not a terminal (a script: ``printf '%s\\n' "$PW" | clonebay clone ...``).
Several may be given: each asks once, in the order ``--key`` then ``--recovery-password``.
``--startup-key`` and ``--key-file`` name files (a .BEK on a USB stick, a LUKS key file).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from clonebay.errors import UsageError

if TYPE_CHECKING:
    from clonebay.fs.keyring import Keyring


def add_key_options(p: argparse.ArgumentParser, *, decrypt: bool = False) -> None:
    """``--key``, ``--recovery-password``, ``--startup-key FILE``, ``--key-file FILE``; and
    ``--decrypt`` for the jobs that write a copy (``decrypt``)."""
    group = p.add_argument_group("locked volumes (BitLocker, LUKS): copy only their used blocks")
    group.add_argument(
        "--key",
        action="count",
        default=0,
        help="ask for a BitLocker password or LUKS passphrase (no echo; one line of stdin when"
        " it is not a terminal); repeat for several volumes",
    )
    group.add_argument(
        "--recovery-password",
        action="count",
        default=0,
        help="ask for a BitLocker 48-digit recovery password (the recovery key ID to look up"
        " is shown by probe); repeat for several volumes",
    )
    group.add_argument(
        "--startup-key",
        action="append",
        default=[],
        metavar="FILE",
        help="a BitLocker startup key (.BEK file)",
    )
    group.add_argument(
        "--key-file",
        action="append",
        default=[],
        metavar="FILE",
        help="a LUKS key file",
    )
    if decrypt:
        group.add_argument(
            "--decrypt",
            action="store_true",
            help="write the BitLocker volumes the keys open DECRYPTED (a plain NTFS that opens"
            " without a key, for a machine without BitLocker); default: kept encrypted",
        )


def _ask(prompt: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(prompt, stream=sys.stderr)
    line = sys.stdin.readline()
    if not line:
        raise UsageError(f"{prompt.rstrip(': ')}: standard input ended before a line was read")
    return line.rstrip("\r\n")


def keyring(args: argparse.Namespace) -> Keyring | None:
    """The secrets the options ask for (None when no option gives one)."""
    from clonebay.fs.bitlocker_keys import read_startup_key  # the ciphers: only when asked
    from clonebay.fs.keyring import Keyring, read_key_file

    keys = Keyring()
    for n in range(getattr(args, "key", 0)):
        which = f" {n + 1}" if args.key > 1 else ""
        keys.passwords.append(_ask(f"BitLocker password or LUKS passphrase{which}: "))
    for n in range(getattr(args, "recovery_password", 0)):
        which = f" {n + 1}" if args.recovery_password > 1 else ""
        keys.recovery_passwords.append(_ask(f"BitLocker recovery password{which}: "))
    for path in getattr(args, "startup_key", []):
        keys.startup_keys.append(read_startup_key(read_key_file(path, "startup key"), path))
    for path in getattr(args, "key_file", []):
        keys.key_files.append(read_key_file(path, "key file"))
    keys.decrypt = getattr(args, "decrypt", False)
    if keys.decrypt and not keys:
        raise UsageError(
            "--decrypt needs the volume's key: --key, --recovery-password or --startup-key"
        )
    if keys.decrypt:
        print(
            "warning: --decrypt: the copy of each BitLocker volume the keys open is written"
            " UNENCRYPTED; anyone with the target can read it",
            file=sys.stderr,
        )
    return keys if keys else None
