"""The wire format of a multicast session (docs/multicast.md is its specification).

Two channels carry a session:

- **Datagrams** on the multicast group, sender -> receivers: ANNOUNCE (who sends what, where
  to connect, how far the first pass has got) and DATA (one numbered slice of an object). Each
  is a 24-byte header, a payload, and a 16-byte tag: HMAC-SHA256 of header + payload under the
  session key, truncated to 128 bits. A datagram whose tag does not match is dropped and
  counted; it never reaches a disk.
- **Control messages** on one TCP connection per receiver (the back channel): HELLO, WELCOME,
  CATALOG, READY, STATUS, NAK, RESULT. The connection opens with a 24-byte GREETING from each
  side carrying a fresh random nonce; the connection key is derived from the session key, the
  session id and both nonces, so each side knows the other's tags were made for this connection
  and no other. Each message is a 4-byte length, a 1-byte type, a body and a 16-byte tag under
  the connection key over a direction byte, a per-connection message counter, the type and the
  body; the counter makes a replayed or reordered message fail its tag. DATA is tagged under a
  session data key that a receiver learns only from an authentic WELCOME (docs/multicast.md §7).

Objects are opaque here (the engine decides what they are: an image's frames): the sender
offers N objects with known sizes, and every object is cut into ``PAYLOAD_SIZE`` slices that
are numbered consecutively across the session (the *sequence number*). 1,432 payload bytes +
24 header + 16 tag = 1,472, the most a UDP datagram carries unfragmented over a 1,500-byte MTU.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from typing import NamedTuple

from clonebay.errors import InputError

DEFAULT_GROUP = "239.255.67.66"  # administratively scoped (RFC 2365): stays inside the site
DEFAULT_PORT = 7766
MAGIC = b"CBMC"
VERSION = 2  # 2: greetings with nonces, connection and data keys, size limits
DATAGRAM_HEADER = struct.Struct("<4sBBHQQ")  # magic, version, type, flags, session, seq
TAG_SIZE = 16  # HMAC-SHA256 truncated to 128 bits (RFC 2104 allows >= half the hash)
MAX_DATAGRAM = 1472  # 1500-byte MTU - 20 IPv4 - 8 UDP
PAYLOAD_SIZE = MAX_DATAGRAM - DATAGRAM_HEADER.size - TAG_SIZE  # 1,432

T_DATA = 1
T_ANNOUNCE = 2

# ANNOUNCE payload: state, TCP port, receivers joined, objects, datagrams in all, first-pass
# position (next sequence number of the first pass), rate in bytes/s.
ANNOUNCE = struct.Struct("<BHHIQQQ")
STATE_WAITING = 0
STATE_RUNNING = 1
STATE_DONE = 2
STATE_NAMES = {STATE_WAITING: "waiting", STATE_RUNNING: "running", STATE_DONE: "done"}

# The back channel (TCP). Each side first sends a GREETING: magic, version, its role
# (FROM_SENDER or FROM_RECEIVER), 2 bytes of zeros, a 16-byte random nonce. Then control
# messages: length (of type + body + tag), type, body, tag.
GREETING = struct.Struct("<4sBc2x16s")
NONCE_SIZE = 16  # 128 bits: never twice in the lifetime of a key
CONTROL_HEADER = struct.Struct("<IB")
# The first message from a peer is read before anything it sent was authentic: its body may not
# exceed this (a HELLO's JSON or a WELCOME is well under 1 KiB). Nothing larger is read from a
# peer until a message of its passed its tag.
PREAUTH_LIMIT = 4096
MAX_CATALOG = 256 << 20  # a catalog for a multi-TB image is tens of MB; beyond this is not ours
MAX_NAK_RANGES = 16384  # a receiver's NAK holds at most this many ranges (256 KiB)
MAX_REPORT = 256 << 10  # a STATUS or RESULT (JSON counters, a message, warnings)
M_HELLO = 1  # either side's first message: JSON {name, version}
M_CATALOG = 2  # sender -> receiver: CATALOG_HEAD, u32 sizes, then the engine's catalog bytes
M_STATUS = 3  # receiver -> sender: JSON progress and loss counters
M_NAK = 4  # receiver -> sender: NAK_HEAD then (first, count) u64 pairs of missing datagrams
M_RESULT = 5  # receiver -> sender: JSON outcome
M_READY = 6  # receiver -> sender: the plan is made, the target accepted; counts for the start
M_WELCOME = 9  # sender -> receiver, its first message: WELCOME (data nonce, catalog length)
M_ALIVE = 10  # receiver -> sender: empty; still planning (the sender drops silent peers)
CATALOG_HEAD = struct.Struct("<IIQ")  # objects, payload size, datagrams in all
WELCOME = struct.Struct("<16sQ")  # the session's data nonce, the CATALOG body's length
NAK_HEAD = struct.Struct("<BI")  # kind (NAK_GAP / NAK_CATCHUP), number of ranges
NAK_RANGE = struct.Struct("<QQ")
NAK_GAP = 0  # lost in flight: repaired before new data
NAK_CATCHUP = 1  # sent before this receiver joined: repaired after the first pass
MAX_NAK = NAK_HEAD.size + MAX_NAK_RANGES * NAK_RANGE.size
FROM_SENDER = b"S"
FROM_RECEIVER = b"R"
CONNECTION_LABEL = b"clonebay-v2-connection"
DATA_LABEL = b"clonebay-v2-data"

KDF_SALT = b"clonebay-multicast-v1"
KDF_ROUNDS = 200_000  # ~0.1 s once per process; makes guessing a short passphrase offline slow
PASSPHRASE_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # no 0/o, 1/l/i: read aloud, typed


class ProtocolError(InputError):
    """A datagram or control message that is not ours, damaged, or not authentic."""

    title = "Network protocol error"


class AuthenticationError(ProtocolError):
    """A control message whose tag does not match: the peer does not know the key, or replays
    what it recorded on another connection."""


class Datagram(NamedTuple):
    kind: int
    flags: int
    session: int
    seq: int
    payload: memoryview


class Announce(NamedTuple):
    state: int
    port: int
    receivers: int
    objects: int
    datagrams: int
    position: int
    rate: int


def new_passphrase() -> str:
    """A passphrase to show on the sender: 4 groups of 4 characters, about 79 bits."""
    chars = "".join(secrets.choice(PASSPHRASE_ALPHABET) for _ in range(16))
    return "-".join(chars[i : i + 4] for i in range(0, 16, 4))


def derive_key(passphrase: str) -> bytes:
    """The 32-byte session key from a passphrase (PBKDF2-HMAC-SHA256). Case, spaces and
    dashes are ignored, so "ABCD efgh" and "abcd-efgh" are the same key."""
    norm = "".join(c for c in passphrase.lower() if c not in " -\t")
    if not norm:
        raise ProtocolError("the session key is empty")
    return hashlib.pbkdf2_hmac("sha256", norm.encode(), KDF_SALT, KDF_ROUNDS)


class Tagger:
    """HMAC-SHA256 under one session key, truncated to ``TAG_SIZE``.

    HMAC is H(K ^ opad, H(K ^ ipad, data)) (RFC 2104). The two keyed hash states depend on the
    key alone, so they are computed once here (RFC 2104 §4 suggests exactly this) and every tag
    costs two state copies and one pass over the data: 1.6 us for a full datagram on our test
    VM against 2.9 us for ``hmac.digest``, which keys both states again on every call. Senders
    and receivers tag tens of thousands of datagrams a second, so this is worth its lines.
    """

    __slots__ = ("inner", "outer")

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def tag(self, data: bytes | memoryview) -> bytes:
        inner = self.inner.copy()
        inner.update(data)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:TAG_SIZE]

    def check(self, data: bytes | memoryview, tag: bytes | memoryview) -> bool:
        """Whether ``tag`` is ``data``'s (compared in constant time)."""
        return hmac.compare_digest(self.tag(data), tag)


def pack_datagram(
    tagger: Tagger,
    kind: int,
    session: int,
    seq: int,
    payload: bytes | memoryview,
    *,
    flags: int = 0,
) -> bytes:
    body = DATAGRAM_HEADER.pack(MAGIC, VERSION, kind, flags, session, seq) + payload
    return body + tagger.tag(body)


def parse_datagram(tagger: Tagger, raw: bytes | memoryview) -> Datagram | None:
    """The datagram, or None when it is not ours or its tag does not match (the caller counts
    those: a stray sender, another session, or damage)."""
    view = memoryview(raw)
    if len(view) < DATAGRAM_HEADER.size + TAG_SIZE or view[:4] != MAGIC:
        return None
    if not tagger.check(view[:-TAG_SIZE], view[-TAG_SIZE:]):
        return None
    _, version, kind, flags, session, seq = DATAGRAM_HEADER.unpack_from(view)
    if version != VERSION:
        return None
    return Datagram(kind, flags, session, seq, view[DATAGRAM_HEADER.size : -TAG_SIZE])


def pack_announce(a: Announce) -> bytes:
    return ANNOUNCE.pack(*a)


def parse_announce(payload: bytes | memoryview) -> Announce:
    if len(payload) != ANNOUNCE.size:
        raise ProtocolError(f"ANNOUNCE of {len(payload)} bytes, expected {ANNOUNCE.size}")
    return Announce(*ANNOUNCE.unpack(payload))


def connection_key(key: bytes, session: int, sender_nonce: bytes, receiver_nonce: bytes) -> bytes:
    """The key of one back-channel connection: HMAC-SHA256(session key, label, session id, the
    sender's nonce, the receiver's nonce). Each side chose its own nonce for this connection, so
    nothing recorded on another connection passes a tag on this one."""
    data = CONNECTION_LABEL + struct.pack("<Q", session) + sender_nonce + receiver_nonce
    return hmac.digest(key, data, "sha256")


def data_key(key: bytes, session: int, nonce: bytes) -> bytes:
    """The key that tags a session's DATA datagrams: HMAC-SHA256(session key, label, session
    id, the sender's data nonce). A receiver learns the nonce only from an authentic WELCOME on
    a connection bound to its own nonce, so DATA of any other session fails its tag."""
    return hmac.digest(key, DATA_LABEL + struct.pack("<Q", session) + nonce, "sha256")


def control_tag(tagger: Tagger, direction: bytes, counter: int, kind: int, body: bytes) -> bytes:
    """The tag of a control message under the connection key (``tagger``)."""
    return tagger.tag(direction + struct.pack("<QB", counter, kind) + body)


def pack_ranges(kind: int, ranges: list[tuple[int, int]]) -> bytes:
    """A NAK body: (first sequence number, count) pairs."""
    parts = [NAK_HEAD.pack(kind, len(ranges))]
    parts.extend(NAK_RANGE.pack(first, count) for first, count in ranges)
    return b"".join(parts)


def parse_ranges(body: bytes) -> tuple[int, list[tuple[int, int]]]:
    if len(body) < NAK_HEAD.size:
        raise ProtocolError("NAK message too short")
    kind, count = NAK_HEAD.unpack_from(body)
    if count > MAX_NAK_RANGES or len(body) != NAK_HEAD.size + count * NAK_RANGE.size:
        raise ProtocolError(f"NAK message of {len(body)} bytes does not hold {count} ranges")
    ranges = [NAK_RANGE.unpack_from(body, NAK_HEAD.size + i * NAK_RANGE.size) for i in range(count)]
    return kind, ranges


def ranges_within(kind: int, ranges: list[tuple[int, int]], datagrams: int) -> bool:
    """Whether a NAK asks only for slices the catalog announced: a known kind, every range
    non-empty and inside [0, datagrams)."""
    if kind not in (NAK_GAP, NAK_CATCHUP):
        return False
    return all(count > 0 and first + count <= datagrams for first, count in ranges)
