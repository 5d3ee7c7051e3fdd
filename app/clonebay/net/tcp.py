"""Unicast fallback over TCP, for networks that block multicast (docs/multicast.md §9).

The receiver listens (``clonebay receive --listen``); the sender connects (``clonebay send
--to HOST``) and writes the image in the stream form (docs/format.md §10), which the receiver
restores as it arrives, exactly like ``clonebay restore -``. The bytes travel in authenticated
chunks on a back-channel ``Channel`` (net/control.py): both sides greet with a fresh nonce, so
every message's tag is bound to this connection and its position in it, and each side's first
message is a small HELLO (at most 4 KiB read before it passed its tag); a peer without the key,
or a replayed connection, is refused before a byte reaches the disk. The receiver answers with
one RESULT message.
"""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Callable
from typing import Any

from clonebay import __version__
from clonebay.net import protocol as p
from clonebay.net.control import Channel, open_channel

DEFAULT_TCP_PORT = 7767
CHUNK = 1 << 20  # bytes of stream per message
M_STREAM = 7  # sender -> receiver: the next bytes of the image stream
M_END = 8  # sender -> receiver: the stream is complete
SESSION = 0  # no multicast session: the two nonces alone bind a connection
HANDSHAKE_TIMEOUT = 30.0  # s for the peer's greeting and HELLO
RECEIVER_LIMITS = {p.M_HELLO: p.PREAUTH_LIMIT, M_STREAM: CHUNK, M_END: 0}
SENDER_LIMITS = {p.M_HELLO: p.PREAUTH_LIMIT, p.M_RESULT: p.MAX_REPORT}


class ChannelReader(io.RawIOBase):
    """The stream bytes a sender writes, as a binary file object (for the stream restore)."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.buffer = b""
        self.ended = False
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, into: Any) -> int:
        view = memoryview(into).cast("B")
        while not self.buffer and not self.ended:
            message = self.channel.recv()
            if message is None:
                raise p.ProtocolError("the sender closed the connection before the stream ended")
            kind, body = message
            if kind == M_END:
                self.ended = True
            elif kind == M_STREAM:
                self.buffer = body
                self.received += len(body)
            else:
                raise p.ProtocolError(f"unexpected message type {kind} in the stream")
        n = min(len(view), len(self.buffer))
        view[:n] = self.buffer[:n]
        self.buffer = self.buffer[n:]
        return n


class ChannelWriter(io.RawIOBase):
    """A binary file object whose bytes go to the receiver in CHUNK-sized messages."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.pending = bytearray()
        self.sent = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.pending += view
        while len(self.pending) >= CHUNK:
            self._send(bytes(self.pending[:CHUNK]))
            del self.pending[:CHUNK]
        return len(view)

    def finish(self) -> None:
        if self.pending:
            self._send(bytes(self.pending))
            self.pending.clear()
        self.channel.send(M_END, b"")

    def _send(self, chunk: bytes) -> None:
        self.channel.send(M_STREAM, chunk)
        self.sent += len(chunk)


def listen(
    key: bytes, port: int = DEFAULT_TCP_PORT, listening: Callable[[int], None] | None = None
) -> Channel:
    """Wait for one sender to connect and authenticate; the channel to read its stream from.
    ``listening`` is called with the port once connections are accepted."""
    try:
        server = socket.create_server(("", port))
    except OSError as exc:
        raise p.ProtocolError(f"cannot listen on TCP port {port}: {exc.strerror}") from exc
    with server:
        if listening is not None:
            listening(server.getsockname()[1])
        conn, _ = server.accept()
    try:
        channel = open_channel(
            conn,
            key,
            SESSION,
            p.FROM_RECEIVER,
            limits=dict(RECEIVER_LIMITS),
            timeout=HANDSHAKE_TIMEOUT,
        )
        _hello(channel)
    except BaseException:
        conn.close()
        raise
    return channel


def connect(key: bytes, host: str, port: int = DEFAULT_TCP_PORT) -> Channel:
    """Connect to a listening receiver; the channel once the receiver's HELLO passed its tag."""
    try:
        sock = socket.create_connection((host, port), timeout=HANDSHAKE_TIMEOUT)
    except OSError as exc:
        raise p.ProtocolError(f"cannot connect to the receiver at {host}:{port}: {exc}") from exc
    try:
        channel = open_channel(
            sock,
            key,
            SESSION,
            p.FROM_SENDER,
            limits=dict(SENDER_LIMITS),
            timeout=HANDSHAKE_TIMEOUT,
        )
        _hello(channel)
    except OSError as exc:
        sock.close()
        raise p.ProtocolError(f"the receiver at {host}:{port} did not answer: {exc}") from exc
    except BaseException:
        sock.close()
        raise
    return channel


def _hello(channel: Channel) -> None:
    """Send this side's HELLO and take the peer's (both small: the first message from a peer is
    read with a 4 KiB limit). Afterwards no deadline: a disk saved on the fly may be slow."""
    hello = {"name": socket.gethostname(), "version": __version__}
    channel.send(p.M_HELLO, json.dumps(hello).encode())
    message = channel.recv()
    if message is None:
        raise p.ProtocolError("the peer closed the connection before its HELLO")
    if message[0] != p.M_HELLO:
        raise p.ProtocolError(f"expected HELLO, got message type {message[0]}")
    channel.deadline = None
    channel.sock.settimeout(None)


def send_result(channel: Channel, result: dict[str, Any]) -> None:
    channel.send(p.M_RESULT, json.dumps(result).encode())


def wait_result(channel: Channel) -> dict[str, Any]:
    """The receiver's RESULT after the stream's end."""
    message = channel.recv()
    if message is None or message[0] != p.M_RESULT:
        raise p.ProtocolError("the receiver closed the connection without a result")
    result: dict[str, Any] = json.loads(message[1])
    return result


def host_port(text: str) -> tuple[str, int]:
    """'host' or 'host:port' -> (host, port)."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    return host, int(port) if port else DEFAULT_TCP_PORT
