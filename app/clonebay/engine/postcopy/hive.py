"""A small layer over a Windows registry hive file: its state read natively, its values read and
written through hivex's command-line tools.

A hive (SYSTEM, SOFTWARE, SAM, a BCD store) opens with a 4096-byte base block. Windows bumps
the primary sequence number before it writes the hive and the secondary one after; when they
differ, changes still wait in the hive's transaction logs (.LOG1/.LOG2) and the primary file
alone is stale. We do not replay logs, so such a hive is never written (``check_clean``): the
technician boots that Windows once and shuts it down fully, which flushes the logs.

Values are read with ``hivexregedit --export`` (every value as its exact type and bytes) and
written with ``hivexsh -w``, whose ``setval`` replaces all the values of a key: a write reads the
key's values, swaps in the new ones and writes them all back. The write goes to a copy in a
temporary folder, is read back there, then the copy's bytes are written over the hive in place
(the file keeps its NTFS record and security descriptor) and read back once more from the hive
itself. Names of keys and values compare case-insensitively, as in Windows.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from clonebay.errors import CommandError, InputError, VerifyError
from clonebay.system.run import run

# The regf base block (libyal "Windows NT Registry File (REGF) format", "File header"):
# 0x00 signature "regf", 0x04 primary sequence number, 0x08 secondary sequence number,
# 0x0C last written FILETIME, 0x14 major version (1), 0x18 minor version, 0x1C file type
# (0 primary), 0x20 format (1), 0x24 root cell offset, 0x28 hive bins data size; 0x1FC holds
# the XOR-32 checksum of the 508 bytes before it.
BASE_BLOCK = struct.Struct("<4sIIQIIIIII")
BASE_BLOCK_SIZE = 4096
CHECKSUM_OFFSET = 0x1FC
REGF = b"regf"

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD = 1, 2, 3, 4
# hivex writes a value as one data cell; above this size Windows expects a "db" big-data list
# (libyal REGF, "Big data"), so keys holding bigger values are never rewritten.
MAX_CELL_DATA = 16344


@dataclass(frozen=True)
class BaseBlock:
    """The fields of a hive's base block that decide whether we may touch it."""

    primary_sequence: int
    secondary_sequence: int
    major_version: int
    minor_version: int
    file_type: int
    root_cell_offset: int
    hive_bins_size: int
    checksum: int

    @property
    def pending_log(self) -> bool:
        return self.primary_sequence != self.secondary_sequence


def checksum(header: bytes) -> int:
    """The base block checksum: XOR of its first 127 little-endian u32 (0 becomes 1 and
    0xFFFFFFFF becomes 0xFFFFFFFE, libyal REGF "File header" notes)."""
    total = 0
    for (word,) in struct.iter_unpack("<I", header[:CHECKSUM_OFFSET]):
        total ^= word
    if total == 0xFFFFFFFF:
        return 0xFFFFFFFE
    return total or 1


def parse_base_block(data: bytes, name: str, file_size: int) -> BaseBlock:
    """The base block of a hive from its first 4096 bytes; InputError naming ``name`` when it is
    not a hive, is damaged or is cut short."""
    if len(data) < BASE_BLOCK_SIZE or data[:4] != REGF:
        raise InputError(f"{name} is not a registry hive (no 'regf' signature at its start)")
    _, primary, secondary, _, major, minor, ftype, _, root, size = BASE_BLOCK.unpack_from(data)
    (stored,) = struct.unpack_from("<I", data, CHECKSUM_OFFSET)
    if stored != checksum(data):
        raise InputError(
            f"{name} is a damaged registry hive: its header checksum is 0x{stored:08x},"
            f" the header sums to 0x{checksum(data):08x}"
        )
    if major != 1 or ftype != 0:
        raise InputError(
            f"{name} is not a primary registry hive (version {major}.{minor}, file type {ftype})"
        )
    if size == 0 or size % 4096 or BASE_BLOCK_SIZE + size > file_size:
        raise InputError(
            f"{name} is a truncated or damaged registry hive: the header counts {size} bytes of"
            f" hive bins, the file holds {file_size - BASE_BLOCK_SIZE}"
        )
    return BaseBlock(primary, secondary, major, minor, ftype, root, size, stored)


def read_base_block(path: Path) -> BaseBlock:
    try:
        with path.open("rb") as f:
            data = f.read(BASE_BLOCK_SIZE)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise InputError(f"cannot read the registry hive {path}: {exc.strerror}") from exc
    return parse_base_block(data, str(path), size)


def pending_log(path: Path) -> bool:
    """True when the hive's sequence numbers differ: its .LOG1/.LOG2 hold changes not replayed."""
    return read_base_block(path).pending_log


def check_clean(path: Path) -> None:
    """InputError unless ``path`` is an undamaged hive with no pending transaction log."""
    block = read_base_block(path)
    if block.pending_log:
        raise InputError(
            f"{path} has a pending transaction log (sequence {block.primary_sequence} !="
            f" {block.secondary_sequence}): boot that Windows once and shut it down fully,"
            " then try again"
        )


@dataclass(frozen=True)
class Value:
    """One registry value: its name ("" for the default value), type and exact bytes."""

    name: str
    kind: int
    data: bytes

    @classmethod
    def sz(cls, name: str, text: str) -> Value:
        """A REG_SZ: UTF-16LE with its terminating NUL, as Windows writes it."""
        return cls(name, REG_SZ, (text + "\0").encode("utf-16-le"))

    @classmethod
    def dword(cls, name: str, number: int) -> Value:
        return cls(name, REG_DWORD, struct.pack("<I", number))

    @classmethod
    def binary(cls, name: str, data: bytes) -> Value:
        return cls(name, REG_BINARY, data)

    def text(self) -> str:
        """A string value's text, up to its first NUL."""
        return self.data.decode("utf-16-le", errors="replace").split("\0", 1)[0]

    def number(self) -> int:
        if self.kind != REG_DWORD or len(self.data) != 4:
            raise InputError(f"registry value {self.name!r} is not a DWORD")
        return int(struct.unpack("<I", self.data)[0])


Values = dict[str, Value]  # lower-cased name -> value


def _hivex(argv: Sequence[str], script: bytes | None = None) -> str:
    """Run one hivex tool (system/tools.py names its Debian package when it is missing)."""
    return run(argv, input_bytes=script).stdout.decode("utf-8", errors="replace")


_VALUE_LINE = re.compile(
    r'^(?:@|"((?:[^"\\]|\\.)*)")=(?:dword:([0-9a-f]{8})|hex\(([0-9a-f]+)\):(.*))$'
)


def parse_export(text: str) -> dict[str, Values]:
    """``hivexregedit --export`` output -> {key path as printed ("\\A\\B"): values}."""
    tree: dict[str, Values] = {}
    current: Values | None = None
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = tree.setdefault(line[1:-1], {})
            continue
        match = _VALUE_LINE.match(line)
        if match is None or current is None:
            continue
        quoted, dword, kind, hexdata = match.groups()
        name = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else ""
        if dword is not None:
            value = Value(name, REG_DWORD, struct.pack("<I", int(dword, 16)))
        else:
            value = Value(name, int(kind, 16), bytes.fromhex(hexdata.replace(",", "")))
        current[name.lower()] = value
    return tree


def _key(path: str) -> str:
    return "\\" + path.strip("\\")


def read_tree(hive: Path, key: str, depth: int = -1) -> dict[str, Values]:
    """Every key under ``key`` (itself included, ``depth`` levels, -1: all) with its values;
    {} when the key does not exist. Keys are named as hivex prints them: "\\Objects\\{..}"."""
    read_base_block(hive)
    argv = ["hivexregedit", "--export", "--max-depth", str(depth), str(hive), _key(key)]
    try:
        text = _hivex(argv)
    except CommandError as exc:
        if "path not found" in exc.stderr:
            return {}
        raise InputError(f"{hive} could not be read as a registry hive: {exc.message}") from exc
    return parse_export(text)


def read_key(hive: Path, key: str) -> Values | None:
    """The values of one key, or None when the key does not exist."""
    tree = read_tree(hive, key, depth=1)
    return next(iter(tree.values())) if tree else None


def read_value(hive: Path, key: str, name: str) -> Value | None:
    values = read_key(hive, key)
    return None if values is None else values.get(name.lower())


def _setval_lines(values: Iterable[Value]) -> list[str]:
    lines = []
    for value in values:
        if value.name == "@" or "\n" in value.name:
            raise InputError(f"registry value name {value.name!r} cannot be written by hivexsh")
        lines += [value.name or "@", f"hex:{value.kind}:{value.data.hex(',')}"]
    return lines


def _merged(hive: Path, key: str, updates: Sequence[Value]) -> Values:
    values = read_key(hive, key)
    if values is None:
        raise InputError(f"{hive} has no key {_key(key)}")
    merged = dict(values)
    for value in updates:
        old = merged.get(value.name.lower())
        merged[value.name.lower()] = Value(old.name if old else value.name, value.kind, value.data)
    big = [v.name for v in merged.values() if len(v.data) > MAX_CELL_DATA]
    if big:
        raise InputError(
            f"{hive}: key {_key(key)} holds values above {MAX_CELL_DATA} bytes ({', '.join(big)}),"
            " which hivex cannot write back as Windows expects; nothing was written"
        )
    return merged


def _check(hive: Path, expected: Mapping[str, Values], when: str) -> None:
    for key, values in expected.items():
        got = read_key(hive, key)
        if got != values:
            raise VerifyError(f"{hive}: key {_key(key)} does not hold what was written ({when})")


def write_values(hive: Path, edits: Mapping[str, Sequence[Value]]) -> None:
    """Set values in existing keys ({key path: values}) in one hivex commit; other values of
    those keys are kept. Refuses a damaged or log-pending hive before writing anything; reads
    every edited key back (from the work copy, then from the hive) and raises VerifyError when
    one differs."""
    check_clean(hive)
    expected = {key: _merged(hive, key, updates) for key, updates in edits.items()}
    script = []
    for key, values in expected.items():
        script += [f"cd {_key(key)}", f"setval {len(values)}", *_setval_lines(values.values())]
    with tempfile.TemporaryDirectory(prefix="clonebay-hive-") as work:
        copy = Path(work) / hive.name
        shutil.copyfile(hive, copy)
        _hivex(["hivexsh", "-w", str(copy)], "\n".join([*script, "commit", "quit", ""]).encode())
        check_clean(copy)
        _check(copy, expected, "work copy")
        data = copy.read_bytes()
    with hive.open("r+b") as f:  # in place: the file keeps its NTFS record and its ACL
        f.write(data)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())
    _check(hive, expected, "after writing the hive")
