"""The secrets a technician gave for locked volumes, tried on every locked volume a job meets.

A BitLocker volume opens with a user password, a 48-digit recovery password, a startup key (.BEK
file), or by itself when protection is suspended (clear key); a LUKS volume with a passphrase or a
key file. The technician does not say which secret is for which volume: each locked volume tries
every secret of a kind it has a protector (or key slot) for, and the opened key is kept by the
volume's own ID, so the half-second key stretch runs once per volume and job, not once per look.

Secrets are never printed: no field is part of the repr, and messages name only the kind of
secret and the protector's or volume's ID. They are read from the terminal or a file, never from
the command line (see cli/keys.py), so they are not in the process list either.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

from clonebay.errors import UsageError
from clonebay.fs.bitlocker_keys import StartupKey

KEY_FILE_LIMIT = 8 << 20  # cryptsetup's default key file limit is 8 MiB too


@dataclass
class Keyring:
    """Secrets for locked volumes; ``decrypt`` asks for a decrypted copy instead of the
    encrypted one (BitLocker's ``--decrypt``). ``opened`` maps a volume's ID to the key opened
    for it (an object of the volume format's own key type)."""

    passwords: list[str] = field(default_factory=list, repr=False)
    recovery_passwords: list[str] = field(default_factory=list, repr=False)
    startup_keys: list[StartupKey] = field(default_factory=list, repr=False)
    key_files: list[bytes] = field(default_factory=list, repr=False)
    decrypt: bool = False
    opened: dict[str, object] = field(default_factory=dict, repr=False)
    refused: dict[str, str] = field(default_factory=dict, repr=False)

    def __bool__(self) -> bool:
        return bool(
            self.passwords or self.recovery_passwords or self.startup_keys or self.key_files
        )

    def __repr__(self) -> str:
        kinds = [
            f"{len(self.passwords)} password(s)",
            f"{len(self.recovery_passwords)} recovery password(s)",
            f"{len(self.startup_keys)} startup key(s)",
            f"{len(self.key_files)} key file(s)",
        ]
        return f"Keyring({', '.join(kinds)}, decrypt={self.decrypt})"

    def unused(self) -> bool:
        """Secrets were given but none opened a volume (a job refuses then: a typo in a key must
        not silently turn a used-blocks copy into a raw one)."""
        return bool(self) and not self.opened

    def to_json(self) -> bytes:
        """The secrets for a helper process (the browse view daemon), written to a pipe: never
        to a file or a command line."""
        return json.dumps(
            {
                "passwords": self.passwords,
                "recovery_passwords": self.recovery_passwords,
                "startup_keys": [
                    [k.guid, k.volume_guid, base64.b64encode(k.key).decode()]
                    for k in self.startup_keys
                ],
                "key_files": [base64.b64encode(k).decode() for k in self.key_files],
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Keyring:
        raw = json.loads(data)
        return cls(
            passwords=list(raw["passwords"]),
            recovery_passwords=list(raw["recovery_passwords"]),
            startup_keys=[
                StartupKey(guid, volume, base64.b64decode(key))
                for guid, volume, key in raw["startup_keys"]
            ],
            key_files=[base64.b64decode(k) for k in raw["key_files"]],
        )


def read_key_file(path: str, what: str) -> bytes:
    """The bytes of a startup key or key file ``path`` (``what`` names it in a refusal): at most
    KEY_FILE_LIMIT, never empty; UsageError in words otherwise."""
    try:
        with Path(path).open("rb") as f:
            data = f.read(KEY_FILE_LIMIT + 1)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from exc
    if len(data) > KEY_FILE_LIMIT:
        raise UsageError(f"{what} {path}: larger than {KEY_FILE_LIMIT >> 20} MiB")
    if not data:
        raise UsageError(f"{what} {path}: the file is empty")
    return data
