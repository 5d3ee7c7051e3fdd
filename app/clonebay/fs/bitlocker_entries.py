"""BitLocker's building blocks: GUIDs, FILETIMEs, encryption methods and the typed entries that
FVE metadata, key protectors and .BEK startup-key files are all made of.

Everything BitLocker stores about keys is a list of entries ("datums" in dislocker's words): a
16-bit total size, a 16-bit entry type (what the entry is for: a key protector, the full-volume
key, the description...), a 16-bit value type (how its payload is laid out: a key, a UTF-16
string, an AES-CCM sealed key...) and a 16-bit version, then the payload. A key protector's
payload holds a nested list of the same entries ("properties", entry type 0). A size of 0 ends a
list (the rest of a block is zero padding).

Spec: libbde's "BitLocker Drive Encryption (BDE) format" (J. Metz), sections "FVE metadata
entry", "FVE metadata entry types" and "FVE metadata value types"; cryptsetup's
lib/bitlk/bitlk.h names the same numbers. Everything here is a pure function of bytes; a
malformed list raises BitlockerError naming the structure and its byte offset in the volume.
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Self

from clonebay.errors import FilesystemError

ENTRY = struct.Struct("<HHHH")  # size (header included), entry type, value type, version
FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)  # FILETIME counts 100 ns ticks from here
SEALED = struct.Struct("<12s16s")  # AES-CCM nonce (FILETIME + counter), then the 16-byte tag


class BitlockerError(FilesystemError):
    """A BitLocker volume's header or FVE metadata is damaged, truncated or of a kind clonebay
    does not read. The volume is still copied whole (raw); only unlocking it is impossible."""

    title = "BitLocker metadata not understood"


class EntryType(enum.IntEnum):
    """What an entry is for (its second 16-bit field)."""

    PROPERTY = 0x0000  # inside a protector or a startup key
    VMK = 0x0002  # a key protector: the volume master key sealed with one kind of key
    FVEK = 0x0003  # the full-volume encryption key, sealed with the volume master key
    VALIDATION = 0x0004
    STARTUP_KEY = 0x0006  # the one entry of a .BEK file
    DESCRIPTION = 0x0007  # "computer name, drive letter: date" as Windows wrote it
    FVEK_BACKUP = 0x000B
    VOLUME_HEADER = 0x000F  # where the volume's real first sectors were moved
    VOLUME_GUID = 0x0019  # in a .BEK file: the volume the key belongs to


class ValueType(enum.IntEnum):
    """How an entry's payload is laid out (its third 16-bit field)."""

    ERASED = 0x0000
    KEY = 0x0001  # encryption method (u32), then the key bytes in clear
    STRING = 0x0002  # UTF-16LE, NUL-terminated
    STRETCH_KEY = 0x0003  # encryption method (u32), the 16-byte salt, a nested sealed key
    USE_KEY = 0x0004
    AES_CCM = 0x0005  # nonce (12), tag (16), ciphertext
    TPM_KEY = 0x0006
    VALIDATION = 0x0007
    VMK = 0x0008  # key protector header (28 bytes), then properties
    EXTERNAL_KEY = 0x0009  # key id (16), FILETIME (8), then properties
    UPDATE = 0x000A
    ERROR = 0x000B
    OFFSET_SIZE = 0x000F  # two u64: offset and size
    RECOVERY_TIME = 0x0015
    GUID = 0x0017
    HINT = 0x0018


class Coded(enum.Enum):
    """An enum whose values are tuples led by the 16-bit code stored on disk."""

    @property
    def code(self) -> int:
        return int(self.value[0])

    @classmethod
    def find(cls, code: int) -> Self | None:
        return next((member for member in cls if member.code == code), None)


class Method(Coded):
    """The encryption method of the volume's sectors: (code, mode, key bits)."""

    AES_CBC_ELEPHANT_128 = (0x8000, "cbc-elephant", 128)
    AES_CBC_ELEPHANT_256 = (0x8001, "cbc-elephant", 256)
    AES_CBC_128 = (0x8002, "cbc", 128)
    AES_CBC_256 = (0x8003, "cbc", 256)
    AES_XTS_128 = (0x8004, "xts", 128)
    AES_XTS_256 = (0x8005, "xts", 256)

    @property
    def mode(self) -> str:
        return str(self.value[1])

    @property
    def key_bits(self) -> int:
        return int(self.value[2])

    @property
    def text(self) -> str:
        names = {"cbc-elephant": "AES-CBC + Elephant diffuser", "cbc": "AES-CBC", "xts": "AES-XTS"}
        return f"{names[self.mode]} {self.key_bits}-bit"


@dataclass(frozen=True)
class Entry:
    """One entry: ``offset`` is where it starts in the volume (or file), ``data`` its payload."""

    offset: int
    kind: int
    value: int
    version: int
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Sealed:
    """A key sealed with AES-CCM: opening it needs the right key, and the tag says whether it was.

    Not secret by itself, but never printed: a repr shows only where it was found."""

    nonce: bytes = field(repr=False)
    tag: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)
    offset: int = 0


def iter_entries(buf: bytes, start: int, end: int, base: int, what: str) -> Iterator[Entry]:
    """The entries of ``buf[start:end]``; ``base`` is the volume offset of ``buf[0]``.

    Every entry is at least its 8-byte header, so the walk always moves on: a hostile size can
    end it with an error, never loop or read past ``end``.
    """
    pos, end = start, min(end, len(buf))
    while end - pos >= ENTRY.size:
        size, kind, value, version = ENTRY.unpack_from(buf, pos)
        if size == 0:
            return
        if size < ENTRY.size or size > end - pos:
            raise BitlockerError(
                f"{what}: entry at offset {base + pos} claims {size} bytes"
                f" but {end - pos} are left in its list"
            )
        yield Entry(base + pos, kind, value, version, bytes(buf[pos + ENTRY.size : pos + size]))
        pos += size


def need(entry: Entry, size: int, what: str) -> None:
    """Refuse an entry whose payload is shorter than its layout."""
    if len(entry.data) < size:
        raise BitlockerError(
            f"{what}: entry at offset {entry.offset} holds {len(entry.data)} bytes,"
            f" its layout needs {size}"
        )


def guid_text(raw: bytes) -> str:
    """A GUID as Windows shows it, without braces: 8-4-4-4-12 upper-case hex digits."""
    return str(uuid.UUID(bytes_le=bytes(raw[:16]))).upper()


def filetime(ticks: int) -> datetime | None:
    """A FILETIME as an aware UTC datetime; None when zero or beyond what datetime holds."""
    if ticks <= 0:
        return None
    try:
        return FILETIME_EPOCH + timedelta(microseconds=ticks // 10)
    except OverflowError:
        return None


def utf16(data: bytes) -> str:
    """A UTF-16LE string up to its NUL; undecodable units become U+FFFD rather than an error."""
    text = data.decode("utf-16-le", errors="replace")
    return text.split("\0", 1)[0].strip()


def sealed(entry: Entry, what: str) -> Sealed:
    """The AES-CCM sealed key an entry of value type AES_CCM holds."""
    need(entry, SEALED.size + 1, what)
    nonce, tag = SEALED.unpack_from(entry.data)
    return Sealed(nonce, tag, entry.data[SEALED.size :], entry.offset)
