"""BitLocker key protectors: the volume master key (VMK), sealed once per way of unlocking.

Every way to unlock a BitLocker volume (the TPM, a password, the 48-digit recovery password, a
.BEK startup key on a USB stick, a clear key while protection is suspended) is one FVE metadata
entry of type VMK: the protector's GUID, a timestamp, its protection type, then properties: an
optional description string ("DiskPassword", "ExternalKey"), a stretch-key salt for passwords
and recovery passwords, the VMK sealed with AES-CCM, and for a clear key the key itself. Opening
any one sealed VMK opens the full-volume key (see bitlocker_keys).

Spec: libbde's "BitLocker Drive Encryption (BDE) format", sections "FVE Volume Master Key (VMK)"
and "Key protection types"; cryptsetup's lib/bitlk/bitlk.c (parse_vmk_entry).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime

from clonebay.fs.bitlocker_entries import (
    Coded,
    Entry,
    EntryType,
    Sealed,
    ValueType,
    filetime,
    guid_text,
    iter_entries,
    need,
    sealed,
    utf16,
)

VMK_HEADER = struct.Struct("<16sQHH")  # GUID, FILETIME, unknown, protection type
KEY_METHOD = struct.Struct("<I")  # the encryption method in front of a key or a stretch salt
SALT = 16


class ProtectorKind(Coded):
    """A protector's protection type: (code, words a technician reads)."""

    CLEAR_KEY = (0x0000, "clear key (protection suspended)")
    TPM = (0x0100, "TPM")
    STARTUP_KEY = (0x0200, "startup key (.BEK file)")
    # TPM 0x100, startup key 0x200 and PIN 0x400 behave as bits (0x0500 is TPM + PIN in libbde
    # and cryptsetup); 0x0300 and 0x0700 are those bits combined, inferred: no sample has them.
    TPM_STARTUP_KEY = (0x0300, "TPM + startup key")
    TPM_PIN = (0x0500, "TPM + PIN")
    TPM_PIN_STARTUP_KEY = (0x0700, "TPM + PIN + startup key")
    RECOVERY_PASSWORD = (0x0800, "recovery password")
    PUBLIC_KEY = (0x1000, "smart card / public key")
    PASSWORD = (0x2000, "password")
    UNKNOWN = (-1, "unknown protector")

    @property
    def text(self) -> str:
        return str(self.value[1])

    @property
    def is_recovery(self) -> bool:
        return self is ProtectorKind.RECOVERY_PASSWORD


@dataclass(frozen=True)
class Protector:
    """One key protector. ``code`` is the raw protection type (for UNKNOWN ones).

    ``created`` is the protector's FILETIME (libbde calls it "last modification": Windows
    writes it when the protector is added). The salt, the sealed VMK and a clear key never
    appear in a repr: a clear key unlocks the volume by itself.
    """

    kind: ProtectorKind
    code: int
    guid: str
    created: datetime | None
    description: str
    offset: int  # of the entry, in the volume
    salt: bytes = field(default=b"", repr=False)
    sealed_vmk: Sealed | None = field(default=None, repr=False)
    clear_key: bytes = field(default=b"", repr=False)

    @property
    def text(self) -> str:
        """One line: kind and GUID, as probe shows it."""
        name = (
            self.kind.text
            if self.kind is not ProtectorKind.UNKNOWN
            else (f"unknown protector (type 0x{self.code:04x})")
        )
        return f"{name} {{{self.guid}}}"


def parse_protector(entry: Entry, what: str) -> Protector:
    """A VMK entry (type VMK, value VMK) as a Protector; BitlockerError if it is malformed."""
    need(entry, VMK_HEADER.size, what)
    raw_guid, ticks, _, code = VMK_HEADER.unpack_from(entry.data)
    description, salt, clear_key = "", b"", b""
    sealed_vmk: Sealed | None = None
    where = f"{what}, protector {guid_text(raw_guid)}"
    base = entry.offset + 8  # the payload starts after the 8-byte entry header
    for prop in iter_entries(entry.data, VMK_HEADER.size, len(entry.data), base, where):
        if prop.kind != EntryType.PROPERTY:
            continue
        if prop.value == ValueType.STRING:
            description = description or utf16(prop.data)
        elif prop.value == ValueType.STRETCH_KEY:
            need(prop, KEY_METHOD.size + SALT, where)
            salt = prop.data[KEY_METHOD.size : KEY_METHOD.size + SALT]
        elif prop.value == ValueType.AES_CCM and sealed_vmk is None:
            sealed_vmk = sealed(prop, where)
        elif prop.value == ValueType.KEY:
            need(prop, KEY_METHOD.size + 16, where)
            clear_key = prop.data[KEY_METHOD.size :]
    return Protector(
        kind=ProtectorKind.find(code) or ProtectorKind.UNKNOWN,
        code=code,
        guid=guid_text(raw_guid),
        created=filetime(ticks),
        description=description,
        offset=entry.offset,
        salt=salt,
        sealed_vmk=sealed_vmk,
        clear_key=clear_key,
    )
