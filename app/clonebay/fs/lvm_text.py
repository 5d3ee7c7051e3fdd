"""An LVM2 metadata area and the volume group text it holds.

Each metadata area (its place comes from the PV label, lvm_label) starts with a 512-byte
``mda_header`` (lvm2 lib/format_text/layout.h), little-endian::

    checksum_xl u32 | magic[16] " LVM2 x[5A%r0N*>" | version u32 (1) | start u64 | size u64
    raw_locn[] { offset u64, size u64, checksum u32, flags u32 } ... until offset 0

``checksum_xl`` is LVM's CRC (lvm_label.lvm_crc) of the header's bytes 4..512. ``start`` is the
area's byte offset in the PV, ``size`` its length. The rest of the area is a circular buffer of
metadata texts: each commit writes the new text after the previous one, and ``raw_locn[0]``
points at the newest committed copy (offset from the area's start, length in bytes, LVM's CRC of
the text). A text that reaches the end of the area goes on right after the 512-byte header. The
flag RAW_LOCN_IGNORED marks an area ``pvchange --metadataignore`` set aside. ``raw_locn[1]``,
when set, is a precommitted text that was never committed: ignored here as lvm2 ignores it.

The text is lvm2's configuration syntax: ``name = value`` and ``name { ... }`` sections nested
to any depth; values are quoted strings (backslash escapes), integers, floats and ``[ ... ]``
lists of those; ``#`` starts a comment. A VG's metadata is one top-level section named after
the VG, followed by a few top-level keys (contents, version, description, creation_host...).
A trailing NUL byte ends the text on disk.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import TypeAlias

from clonebay.fs.lvm_label import LvmError, lvm_crc
from clonebay.model import Extent
from clonebay.system.blockdev import ByteSource

MDA_HEADER_SIZE = 512
FMTT_MAGIC = b" LVM2 x[5A%r0N*>"
FMTT_VERSION = 1
MDA_HEADER = struct.Struct("<I16sIQQ")  # checksum_xl, magic, version, start, size
RAW_LOCN = struct.Struct("<QQII")  # offset, size, checksum, flags
RAW_LOCN_IGNORED = 0x1
MAX_TEXT = 64 << 20  # lvm2 caps an area's metadata far lower; a bigger size is a damaged header
MAX_DEPTH = 32  # a VG's text nests 4 deep (VG, logical_volumes, LV, segment)

Scalar: TypeAlias = str | int | float
Value: TypeAlias = "Scalar | list[Scalar] | Section"
Section: TypeAlias = "dict[str, Value]"


@dataclass(frozen=True)
class MetadataArea:
    """One metadata area of a PV: where it lies and the newest text it holds ("" if none)."""

    area: Extent
    ignored: bool
    text: str


def _mda_header(src: ByteSource, area: Extent) -> tuple[int, tuple[int, int, int, int]]:
    """(area size, (offset, size, checksum, flags) of raw_locn[0]) after checking the header."""
    where = f"LVM metadata area at byte {area.start}"
    if area.length < 2 * MDA_HEADER_SIZE or area.end > src.size:
        raise LvmError(f"{where}: size {area.length} does not fit the device ({src.size} bytes)")
    header = src.pread(MDA_HEADER_SIZE, area.start)
    checksum, magic, version, start, size = MDA_HEADER.unpack_from(header)
    if magic != FMTT_MAGIC or version != FMTT_VERSION:
        raise LvmError(f"{where}: no metadata header (magic or version wrong)")
    if lvm_crc(header[4:]) != checksum:
        raise LvmError(f"{where}: header checksum mismatch (damaged header)")
    if start != area.start or size != area.length:
        raise LvmError(
            f"{where}: header says it lies at {start}+{size}, the label {area.start}+{area.length}"
        )
    return size, RAW_LOCN.unpack_from(header, MDA_HEADER.size)


def read_area(src: ByteSource, area: Extent) -> MetadataArea:
    """The metadata area at ``area`` (from the label) and its newest committed text."""
    where = f"LVM metadata area at byte {area.start}"
    size, (offset, length, checksum, flags) = _mda_header(src, area)
    ignored = bool(flags & RAW_LOCN_IGNORED)
    if offset == 0 or length == 0:
        return MetadataArea(area, ignored, "")
    if not MDA_HEADER_SIZE <= offset < size or length > min(size - MDA_HEADER_SIZE, MAX_TEXT):
        raise LvmError(f"{where}: text of {length} bytes at {offset} lies outside the area")
    first = min(length, size - offset)
    text = src.pread(first, area.start + offset)
    if first < length:  # the circular buffer wrapped: the rest follows the header
        text += src.pread(length - first, area.start + MDA_HEADER_SIZE)
    if lvm_crc(text) != checksum:
        raise LvmError(f"{where}: checksum of the metadata text at {offset} mismatch")
    try:
        decoded = text.rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LvmError(f"{where}: metadata text is not UTF-8 (byte {exc.start})") from exc
    return MetadataArea(area, ignored, decoded)


TOKEN = re.compile(
    r"""(?P<space>\s+|\#[^\n]*)
      | (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<punct>[{}\[\]=,])
      | (?P<word>[^\s{}\[\]=,"\#]+)""",
    re.VERBOSE | re.DOTALL,
)
INT = re.compile(r"[+-]?\d+")
FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?")


class _Parser:
    """A recursive-descent reader of lvm2's config syntax over a list of tokens."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where
        self.tokens: list[tuple[str, str, int]] = []  # kind, text, position
        pos = 0
        while pos < len(text):
            match = TOKEN.match(text, pos)
            if match is None:
                raise self.error("an unterminated string", pos)
            kind = match.lastgroup or ""
            if kind != "space":
                self.tokens.append((kind, match.group(), pos))
            pos = match.end()
        self.i = 0

    def error(self, what: str, pos: int | None = None) -> LvmError:
        if pos is None:
            pos = self.tokens[self.i][2] if self.i < len(self.tokens) else len(self.text)
        line = self.text.count("\n", 0, pos) + 1
        return LvmError(f"{self.where}: metadata text not understood at line {line}: {what}")

    def next(self, what: str) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise self.error(f"the text ends where {what} should follow (truncated?)")
        kind, text, _pos = self.tokens[self.i]
        self.i += 1
        return kind, text

    def section(self, depth: int, closed: bool) -> Section:
        if depth > MAX_DEPTH:
            raise self.error(f"sections nested more than {MAX_DEPTH} deep")
        found: Section = {}
        while self.i < len(self.tokens) or closed:
            kind, name = self.next("a name or '}'")
            if closed and name == "}" and kind == "punct":
                return found
            if kind == "string":
                name = _unquote(name)
            elif kind != "word":
                raise self.error(f"{name!r} where a name should be", self.tokens[self.i - 1][2])
            _kind, sep = self.next(f"'=' or '{{' after {name!r}")
            if sep == "{":
                found[name] = self.section(depth + 1, True)
            elif sep == "=":
                found[name] = self.value()
            else:
                raise self.error(f"{sep!r} after {name!r}", self.tokens[self.i - 1][2])
        return found

    def value(self) -> Value:
        kind, text = self.next("a value")
        if kind == "punct" and text == "[":
            items: list[Scalar] = []
            while True:
                kind, text = self.next("a list item or ']'")
                if kind == "punct" and text == "]":
                    return items
                if items:
                    if text != ",":
                        raise self.error(f"{text!r} where ',' or ']' should be")
                    kind, text = self.next("a list item")
                items.append(self.scalar(kind, text))
        return self.scalar(kind, text)

    def scalar(self, kind: str, text: str) -> Scalar:
        if kind == "string":
            return _unquote(text)
        if kind == "word" and INT.fullmatch(text):
            return int(text)
        if kind == "word" and FLOAT.fullmatch(text):
            return float(text)
        raise self.error(f"{text!r} is not a string or a number", self.tokens[self.i - 1][2])


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", r"\1", token[1:-1], flags=re.DOTALL)


def parse_config(text: str, where: str = "LVM metadata") -> Section:
    """lvm2 configuration text -> nested dicts (sections), lists and scalars, in text order.
    LvmError (with ``where`` and the line) for anything that is not that syntax."""
    return _Parser(text, where).section(0, closed=False)
