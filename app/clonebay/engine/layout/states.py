"""Which volumes a job may edit, and what it must tell the technician about each.

DESIGN §2 "Locked and unusual volumes": a hibernated or Fast Startup NTFS holds a saved system
that only the same machine should resume, so nothing writes into it (no hidden-sector patch, no
growth); encrypted volumes (BitLocker, LUKS) and anything copied raw are never edited either, as
clonebay did not understand them well enough to. Every volume copied raw, dirty, hibernated or
encrypted is named, with the prober's reason, in the Plan's notes and the job's result.
"""

from __future__ import annotations

from clonebay.model import CopyMethod, Volume, VolumeState

NOT_EDITED = (VolumeState.HIBERNATED, VolumeState.ENCRYPTED)
KEY_NOTES = ("BitLocker protectors:", "BitLocker recovery key ID:", "LUKS", "active key slots:")
HIBERNATED_WORDS = (
    "Windows was not shut down: it hibernated, or shut down with Fast Startup (on by default),"
    " which saves the running system into hiberfil.sys and leaves the volume as if still in"
    " use. It is copied whole, every byte, and left untouched (not grown, hidden sectors not"
    " set), because only this machine may resume that saved system without losing files. To"
    " copy only the used blocks: start Windows, then shut it down fully (hold Shift while"
    " clicking Shut down, or run `shutdown /s /t 0`; `powercfg /h off` turns Fast Startup off"
    " for good), and copy again."
)
EDITABLE = (VolumeState.CLEAN, VolumeState.DIRTY, VolumeState.NEEDS_RECOVERY, VolumeState.ERRORS)


def region_name(number: int) -> str:
    """A move's name in plans, notes and results: "volume" for a single volume, else pN."""
    return "volume" if number == 0 else f"p{number}"


def editable(volume: Volume | None) -> bool:
    """Whether fixups may write into ``volume`` (hidden sectors, growth): a volume the prober
    understood, neither hibernated (only the machine that saved it should resume it) nor
    encrypted. A raw copy of something the prober was in doubt about (state UNKNOWN) is never
    edited; an NTFS copied raw only because its $LogFile has records to replay (DIRTY) still
    gets its hidden sectors set: the boot sector was parsed, and the replay does not read them."""
    return volume is not None and volume.state in EDITABLE


def _keys_of(volume: Volume) -> str:
    """What opens an encrypted volume, from the prober's notes: its protectors and recovery key
    ID (BitLocker: the ID to look the recovery password up by)."""
    said = [n for n in volume.notes if n.startswith(KEY_NOTES)]
    return "".join(f"; {n}" for n in said)


def state_note(name: str, volume: Volume | None) -> str:
    """What a technician must know about a volume's state or copy method ("" when clean)."""
    if volume is None:
        return ""
    state, fs = volume.state, volume.fstype
    if volume.decrypted:  # the technician must see, in the Plan, that the copy is plaintext
        return f"{name}: {volume.reason}"
    if state is VolumeState.HIBERNATED:
        also = " It is also BitLocker-encrypted: the copy keeps that." if fs == "bitlocker" else ""
        return f"{name}: {HIBERNATED_WORDS}{also}"
    if state is VolumeState.ENCRYPTED and volume.copy is CopyMethod.NATIVE:
        return f"{name}: {volume.reason}{_keys_of(volume)}"
    if state is VolumeState.ENCRYPTED:
        return f"{name}: encrypted ({volume.reason}): copied raw, never edited{_keys_of(volume)}"
    if volume.copy is CopyMethod.RAW:
        said = f" ({state.value})" if state not in (VolumeState.CLEAN, VolumeState.UNKNOWN) else ""
        return f"{name}: {fs}{said} copied raw: {volume.reason or 'no reason given'}"
    if state is not VolumeState.CLEAN:
        detail = "; ".join(volume.notes)
        return f"{name}: {fs} is {state.value}" + (f": {detail}" if detail else "")
    return ""
