"""Locked volumes as the TUI shows them, and the secret a technician types to unlock one.

A BitLocker or LUKS volume that no key of the session opens is copied whole, every byte, still
encrypted. With its password, 48-digit recovery password, startup key (.BEK) or LUKS passphrase
or key file, the prober maps the filesystem inside and the copy carries only the ciphertext of
its used blocks (fs/bitlocker_probe.py, fs/luks_probe.py). The Plan, the disk details and
Browse list such volumes with what would open them, and the Unlock modal (screens/unlock.py)
takes one secret at a time.

A secret is tried alone, in a Keyring of its own (``trial_keyring``): the volume's refusal then
says why that secret, and no other, did not open it. Only a secret that opened the volume joins
the session's Keyring (Services.unlock), so a mistyped one is never tried again, on this or any
other volume. Secrets are never shown: no repr, and refusals name only the kind of secret.

Pure data apart from reading a key file: no Textual here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from clonebay.engine import DiskReport, state_note
from clonebay.fs.bitlocker_keys import read_startup_key
from clonebay.fs.keyring import Keyring, read_key_file
from clonebay.model import CopyMethod, Volume, VolumeState
from clonebay.units import human_size

FAMILIES = {"bitlocker": "BitLocker", "luks": "LUKS"}  # fstype -> the name a technician knows
RECOVERY_SHAPE = re.compile(r"\d{6}(?:[-\s]?\d{6}){7}")  # 8 groups of 6 digits, dashes optional
RECOVERY_ID = "BitLocker recovery key ID: "  # fs/bitlocker_meta.probe_notes
REFUSED = ("; not unlocked: ", "; not opened: ")  # what the probers add when a key was refused
LOOK_UP = (
    "look it up at aka.ms/myrecoverykey (the owner's Microsoft account) or in Active Directory"
    " (or Entra ID) under this ID"
)


def recovery_password(text: str) -> str | None:
    """``text`` in the dashed form BitLocker prints when it has the recovery password's shape,
    8 groups of 6 digits with or without dashes; None when it does not."""
    compact = text.strip()
    if not RECOVERY_SHAPE.fullmatch(compact):
        return None
    digits = re.sub(r"[-\s]", "", compact)
    return "-".join(digits[i : i + 6] for i in range(0, 48, 6))


@dataclass(frozen=True)
class Secret:
    """What the technician gave in the Unlock modal: typed ``text`` (a password, a recovery
    password or a passphrase) or the path of a ``file`` (a .BEK startup key, a LUKS key file)."""

    text: str = field(default="", repr=False)
    file: str = ""

    def kind(self, fstype: str) -> str:
        """The kind of secret, in words for a message (never its content)."""
        if self.file:
            return "startup key" if fstype == "bitlocker" else "key file"
        if fstype == "bitlocker" and recovery_password(self.text):
            return "recovery password"
        return "password" if fstype == "bitlocker" else "passphrase"


def trial_keyring(secret: Secret, fstype: str) -> Keyring:
    """A Keyring holding ``secret`` alone, as the prober of ``fstype`` takes it (a key file is
    read here: UsageError when it cannot be; a .BEK that is not one: BitlockerKeyError)."""
    keys = Keyring()
    if secret.file and fstype == "bitlocker":
        keys.startup_keys.append(
            read_startup_key(read_key_file(secret.file, "startup key"), secret.file)
        )
    elif secret.file:
        keys.key_files.append(read_key_file(secret.file, "key file"))
    elif fstype == "bitlocker" and (dashed := recovery_password(secret.text)):
        keys.recovery_passwords.append(dashed)
    else:
        keys.passwords.append(secret.text)
    return keys


def keep(session: Keyring, trial: Keyring) -> None:
    """Add the secrets of ``trial`` (they opened a volume) and the keys they opened to
    ``session``, so the half-second key stretch does not run again for that volume."""
    session.passwords.extend(trial.passwords)
    session.recovery_passwords.extend(trial.recovery_passwords)
    session.startup_keys.extend(trial.startup_keys)
    session.key_files.extend(trial.key_files)
    session.opened.update(trial.opened)


def copy_of(keys: Keyring) -> Keyring:
    """Another Keyring with the same secrets and opened keys (what its probes record stays in
    the copy)."""
    return Keyring(
        list(keys.passwords),
        list(keys.recovery_passwords),
        list(keys.startup_keys),
        list(keys.key_files),
        opened=dict(keys.opened),
    )


@dataclass(frozen=True)
class LockedVolume:
    """An encrypted volume of a disk (or of an image: ``holder``), opened by a key of the
    session or not. ``number`` is the partition's (0: the whole disk is the volume)."""

    disk: str
    number: int
    start: int
    volume: Volume
    holder: str = "Disk"

    @property
    def name(self) -> str:
        return f"p{self.number}" if self.number else "volume"

    @property
    def family(self) -> str:
        return FAMILIES[self.volume.fstype]

    @property
    def locked(self) -> bool:
        """No key of the session opened it (it is copied whole)."""
        return not any("unlocked with" in said for said in (self.volume.reason, *self.volume.notes))

    @property
    def refusal(self) -> str:
        """Why the keys tried did not open it, in the prober's words ("" when none was)."""
        reason = self.volume.reason
        for mark in REFUSED:
            if mark in reason:
                return reason.split(mark, 1)[1]
        return ""

    @property
    def recovery_key_ids(self) -> list[str]:
        return [n.removeprefix(RECOVERY_ID) for n in self.volume.notes if n.startswith(RECOVERY_ID)]

    @property
    def title(self) -> str:
        """ "p1, BitLocker 'Windows', 100.0 MiB"."""
        label = f" {self.volume.label!r}" if self.volume.label else ""
        return f"{self.name}, {self.family}{label}, {human_size(self.volume.size)}"

    def lines(self) -> list[str]:
        """What the Plan and the disk details say of it: how it is copied and what opens it."""
        v = self.volume
        if not self.locked and v.copy is CopyMethod.NATIVE:
            copied = f"{human_size(v.used_bytes)} of {human_size(v.size)} to copy"
            return [f"{self.title}: {v.reason} ({copied})."]
        if not self.locked:
            return [f"{self.title}: copied whole, every byte, still encrypted: {v.reason}."]
        lines = [f"{self.title}: locked, copied whole, every byte, still encrypted."]
        lines += [f"  {note}" for note in v.notes if not note.startswith(RECOVERY_ID)]
        lines += [f"  Recovery key ID {key_id}: {LOOK_UP}." for key_id in self.recovery_key_ids]
        if self.refusal:
            lines.append(f"  Not unlocked: {self.refusal}")
        secrets = (
            "password, 48-digit recovery password or startup key"
            if v.fstype == "bitlocker"
            else "passphrase or key file"
        )
        lines.append(f"  Unlock it with its {secrets}: only its used blocks are then copied.")
        return lines


def _volumes(report: DiskReport) -> Iterator[tuple[int, int, Volume]]:
    if report.whole_disk is not None:
        yield 0, 0, report.whole_disk
    for pr in report.partitions:
        if pr.volume is not None:
            yield pr.partition.number, pr.partition.start, pr.volume


def locked_volumes(report: DiskReport) -> tuple[LockedVolume, ...]:
    """Every BitLocker and LUKS volume of ``report``, opened or not."""
    return tuple(
        LockedVolume(report.path, number, start, volume)
        for number, start, volume in _volumes(report)
        if volume.fstype in FAMILIES
    )


def image_volume(image: str, region: Mapping[str, Any]) -> LockedVolume:
    """The encrypted partition ``region`` of an image (``engine.jobs.image_info``'s words), as
    the Unlock modal names it when Browse opens it."""
    name = str(region["name"])
    volume = Volume(
        str(region["fstype"]),
        int(region["size"]),
        (),
        CopyMethod.RAW,
        VolumeState.ENCRYPTED,
        str(region.get("label", "")),
        notes=tuple(region.get("notes", ())),
    )
    number = int(name[1:]) if name[1:].isdigit() else 0
    return LockedVolume(image, number, int(region["disk_offset"]), volume, "Image")


def find(report: DiskReport, number: int) -> LockedVolume | None:
    """The encrypted volume ``number`` of ``report`` (None: there is none, or it is not one)."""
    return next((v for v in locked_volumes(report) if v.number == number), None)


def hibernated_notes(report: DiskReport) -> list[str]:
    """What the Plan says in full of each hibernated Windows (why it is copied whole, how to shut
    it down fully), in the engine's words."""
    return [
        state_note(f"p{number}" if number else "volume", volume)
        for number, _, volume in _volumes(report)
        if volume.state is VolumeState.HIBERNATED
    ]
