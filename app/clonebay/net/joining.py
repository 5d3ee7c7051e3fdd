"""A receiver's side of the back channel before data flows (docs/multicast.md §5, §6): connect,
greet, say HELLO, and take the sender's WELCOME, which must pass its tag under a connection key
bound to the nonce this receiver just drew; and, while the engine plans the restore or finishes
it (fsync, --verify), ALIVE messages so the sender does not take the receiver for a silent one.

A WELCOME that fails its tag raises ``AuthenticationError`` (a recorded session replayed, or not
our sender: the receiver ignores that session from then on); a connection refused, closed or
timed out raises ``OSError`` or ``ProtocolError`` (the sender may be at its connection limit: the
receiver tries again at the next ANNOUNCE).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import NamedTuple

from clonebay import __version__
from clonebay.net import protocol as p
from clonebay.net.control import Channel, open_channel

CONNECT_TIMEOUT = 10.0  # s to connect and get the sender's greeting and WELCOME
ALIVE_EVERY = 0.5  # s between ALIVE messages while planning or finishing (the sender waits 30 s)
LIMITS = {p.M_WELCOME: p.WELCOME.size}  # then CATALOG, of the length the WELCOME says


class Joined(NamedTuple):
    channel: Channel  # ready for the CATALOG
    data_key: bytes  # the key of this session's DATA datagrams


def join(address: str, port: int, key: bytes, session: int, name: str) -> Joined:
    """The back channel of ``session`` at ``address``:``port``, once the sender's WELCOME
    passed its tag."""
    sock = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
    try:
        channel = open_channel(
            sock, key, session, p.FROM_RECEIVER, limits=dict(LIMITS), timeout=CONNECT_TIMEOUT
        )
        hello = {"name": name or socket.gethostname(), "version": __version__}
        channel.send(p.M_HELLO, json.dumps(hello).encode())
        message = channel.recv()
        if message is None or message[0] != p.M_WELCOME:
            raise p.ProtocolError("the sender closed the connection before its WELCOME")
        nonce, catalog_size = p.WELCOME.unpack(message[1])
        if catalog_size > p.MAX_CATALOG:
            raise p.ProtocolError(f"the sender announces a catalog of {catalog_size} bytes")
    except BaseException:
        sock.close()
        raise
    channel.limits = {p.M_CATALOG: catalog_size}
    channel.deadline = None
    sock.settimeout(None)
    return Joined(channel, p.data_key(key, session, nonce))


@contextlib.contextmanager
def alive(channel: Channel) -> Iterator[None]:
    """ALIVE every ALIVE_EVERY seconds while the block runs (the engine plans the restore, and
    may zero runs of a large disk meanwhile, or finishes it: fsync, --verify)."""
    stop = threading.Event()

    def beat() -> None:
        with contextlib.suppress(OSError):
            while not stop.wait(ALIVE_EVERY):
                channel.send(p.M_ALIVE, b"")

    thread = threading.Thread(target=beat, name="clonebay-alive", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
