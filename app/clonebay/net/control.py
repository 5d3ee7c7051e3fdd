"""The back channel: authenticated messages over one TCP connection (docs/multicast.md §4).

Each side counts the messages it sends; the tag of message n covers the direction, n, the
session id, the type and the body, so a message from another session, a replayed one, or one
from someone who does not know the key is refused and the connection dropped.
"""

from __future__ import annotations

import contextlib
import hmac
import socket
import threading

from clonebay.net.protocol import (
    CONTROL_HEADER,
    MAX_CONTROL,
    TAG_SIZE,
    ProtocolError,
    Tagger,
    control_tag,
)


class Channel:
    """One end of a back-channel connection. ``send`` may be called from several threads;
    ``recv`` from one."""

    def __init__(
        self, sock: socket.socket, key: bytes, session: int, mine: bytes, theirs: bytes
    ) -> None:
        self.sock = sock
        self.tagger = Tagger(key)
        self.session = session
        self.mine, self.theirs = mine, theirs
        self.sent = 0
        self.received = 0
        self.lock = threading.Lock()
        if sock.family in (socket.AF_INET, socket.AF_INET6):  # NAKs must not wait for Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, kind: int, body: bytes) -> None:
        with self.lock:
            mac = control_tag(self.tagger, self.mine, (self.sent, self.session, kind), body)
            self.sent += 1
            head = CONTROL_HEADER.pack(1 + len(body) + TAG_SIZE, kind)
            self.sock.sendall(head + body + mac)

    def recv(self) -> tuple[int, bytes] | None:
        """The next message, or None when the peer closed the connection."""
        head = self._exact(CONTROL_HEADER.size)
        if head is None:
            return None
        length, kind = CONTROL_HEADER.unpack(head)
        if not 1 + TAG_SIZE <= length <= MAX_CONTROL:
            raise ProtocolError(f"control message of {length} bytes: not a clonebay peer")
        rest = self._exact(length - 1)
        if rest is None:
            raise ProtocolError("the connection closed in the middle of a message")
        body, got = rest[:-TAG_SIZE], rest[-TAG_SIZE:]
        want = control_tag(self.tagger, self.theirs, (self.received, self.session, kind), body)
        if not hmac.compare_digest(want, got):
            raise ProtocolError(
                "a control message failed its authentication tag: the peer does not know the"
                " session key (or the message was replayed or damaged)"
            )
        self.received += 1
        return kind, body

    def _exact(self, size: int) -> bytes | None:
        parts, got = [], 0
        while got < size:
            piece = self.sock.recv(min(size - got, 1 << 20))
            if not piece:
                if got == 0:
                    return None
                raise ProtocolError("the connection closed in the middle of a message")
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
