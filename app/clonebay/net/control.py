"""The back channel: authenticated messages over one TCP connection (docs/multicast.md §5).

A connection opens with a GREETING from each side: magic, version, role and 16 random bytes
(the side's nonce for this connection). The connection key is derived from the session key,
the session id and both nonces (protocol.connection_key), so a side that chose its nonce just
now knows that a message passing its tag was made for this connection: a transcript recorded
on another connection, of this session or an earlier one, fails on its first message.

Each side counts the messages it sends; the tag of message n covers the direction, n, the type
and the body, so a reordered, repeated or forged message is refused and the connection dropped.

Memory is bounded before authentication: a greeting is 24 bytes, and the first message from a
peer may not exceed ``PREAUTH_LIMIT`` (4 KiB) whatever its header claims. After that each
message type has its own limit (``limits``: type -> largest body); a type that is not in it, or
a length past its limit, closes the connection before its body is read.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import socket
import threading
import time

from clonebay.net.protocol import (
    CONTROL_HEADER,
    FROM_RECEIVER,
    FROM_SENDER,
    GREETING,
    MAGIC,
    NONCE_SIZE,
    PREAUTH_LIMIT,
    TAG_SIZE,
    VERSION,
    AuthenticationError,
    ProtocolError,
    Tagger,
    connection_key,
    control_tag,
)


class Channel:
    """One end of a back-channel connection, after the greetings (see ``open_channel``).
    ``send`` may be called from several threads; ``recv`` from one."""

    def __init__(
        self,
        sock: socket.socket,
        key: bytes,
        mine: bytes,
        theirs: bytes,
        limits: dict[int, int],
    ) -> None:
        self.sock = sock
        self.tagger = Tagger(key)  # the connection key
        self.mine, self.theirs = mine, theirs
        self.limits = limits  # message type -> largest body accepted from the peer
        self.deadline: float | None = None  # monotonic time by which recv must have finished
        self.sent = 0
        self.received = 0
        self.lock = threading.Lock()
        if sock.family in (socket.AF_INET, socket.AF_INET6):  # NAKs must not wait for Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def authenticated(self) -> bool:
        """Whether a message from the peer has passed its tag: it knows the key."""
        return self.received > 0

    def send(self, kind: int, body: bytes) -> None:
        with self.lock:
            mac = control_tag(self.tagger, self.mine, self.sent, kind, body)
            self.sent += 1
            head = CONTROL_HEADER.pack(1 + len(body) + TAG_SIZE, kind)
            self.sock.sendall(head + body + mac)

    def recv(self) -> tuple[int, bytes] | None:
        """The next message, checked against its tag before it is returned, or None when the
        peer closed the connection between messages."""
        head = read_exact(self.sock, CONTROL_HEADER.size, self.deadline, allow_eof=True)
        if head is None:
            return None
        length, kind = CONTROL_HEADER.unpack(head)
        limit = self.limits.get(kind)
        if limit is None:
            raise ProtocolError(f"unexpected control message type {kind}")
        if not self.authenticated:
            limit = min(limit, PREAUTH_LIMIT)
        if not 1 + TAG_SIZE <= length <= 1 + limit + TAG_SIZE:
            raise ProtocolError(
                f"control message of type {kind} and {length} bytes refused (at most"
                f" {limit} here): not a clonebay peer of this version"
            )
        rest = read_exact(self.sock, length - 1, self.deadline)
        assert rest is not None
        body, got = bytes(rest[:-TAG_SIZE]), rest[-TAG_SIZE:]
        want = control_tag(self.tagger, self.theirs, self.received, kind, body)
        if not hmac.compare_digest(want, got):
            raise AuthenticationError(
                "a control message failed its authentication tag: the peer does not know the"
                " session key (or the message was replayed from another connection, or damaged)"
            )
        self.received += 1
        return kind, body

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def open_channel(
    sock: socket.socket,
    key: bytes,
    session: int,
    role: bytes,
    *,
    limits: dict[int, int],
    timeout: float | None,
) -> Channel:
    """Exchange greetings on a new connection and return its Channel; ``role`` is this side's
    (FROM_SENDER or FROM_RECEIVER). Within ``timeout`` seconds the peer's greeting must have
    come; the same deadline holds for its first message (``Channel.deadline``; the caller lifts
    it once that message passed its tag)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    nonce = secrets.token_bytes(NONCE_SIZE)
    sock.sendall(GREETING.pack(MAGIC, VERSION, role, nonce))
    raw = read_exact(sock, GREETING.size, deadline)
    assert raw is not None
    magic, version, their_role, their_nonce = GREETING.unpack(raw)
    theirs = FROM_RECEIVER if role == FROM_SENDER else FROM_SENDER
    if magic != MAGIC or their_role != theirs:
        raise ProtocolError("the peer is not a clonebay back channel")
    if version != VERSION:
        raise ProtocolError(
            f"the peer speaks multicast protocol version {version}, this is version {VERSION}:"
            " use the same clonebay release on both sides"
        )
    if role == FROM_SENDER:
        key = connection_key(key, session, nonce, their_nonce)
    else:
        key = connection_key(key, session, their_nonce, nonce)
    channel = Channel(sock, key, role, theirs, limits)
    channel.deadline = deadline
    return channel


def read_exact(
    sock: socket.socket, size: int, deadline: float | None, *, allow_eof: bool = False
) -> bytearray | None:
    """Exactly ``size`` bytes (the caller bounded ``size``); None when the peer closed before
    the first byte and ``allow_eof``. With a ``deadline`` the socket's timeout is what is left of
    it, so a peer that trickles bytes cannot stretch it."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the peer did not finish its message in time")
            sock.settimeout(left)
        n = sock.recv_into(view[got:], min(size - got, 1 << 20))
        if not n:
            if got == 0 and allow_eof:
                return None
            raise ProtocolError("the connection closed in the middle of a message")
        got += n
    return buf
