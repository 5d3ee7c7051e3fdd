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

from dataclasses import dataclass, field

from clonebay.fs.bitlocker_keys import StartupKey


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
