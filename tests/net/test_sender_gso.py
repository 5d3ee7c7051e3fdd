"""The sender's batches on a real socket: several datagrams per system call with UDP GSO, and
one call per datagram once the kernel refuses GSO (here: a socket without UDP checksums, which
the kernel will not segment), with the same datagrams on the wire either way."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence

import pytest

from clonebay.net import protocol as p
from clonebay.net.sender import GSO_SEGMENTS, SendConfig, Sender

SO_NO_CHECK = 11  # <asm-generic/socket.h>: send UDP without checksums
PORT = 7797
KEY = p.derive_key("gso-test")


class Blob:
    """One object of 20 full slices and a short last one."""

    catalog = b"{}"
    body_bytes = bytes(i & 0xFF for i in range(20 * p.PAYLOAD_SIZE + 5))

    @property
    def sizes(self) -> Sequence[int]:
        return [len(self.body_bytes)]

    def body(self, number: int) -> bytes:
        return self.body_bytes


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((p.DEFAULT_GROUP, PORT))
    group = socket.inet_aton(p.DEFAULT_GROUP) + socket.inet_aton("127.0.0.1")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
    sock.settimeout(2)
    yield sock
    sock.close()


def receive(sock: socket.socket, count: int, tagger: p.Tagger) -> list[p.Datagram]:
    out = []
    for _ in range(count):
        d = p.parse_datagram(tagger, sock.recv(65536))
        assert d is not None, "a datagram failed its tag"
        out.append(d)
    return out


def test_batches_with_gso_then_one_call_per_datagram_when_refused(listener: socket.socket) -> None:
    source = Blob()
    sender = Sender(SendConfig(key=KEY, port=PORT, interface="127.0.0.1"), source)
    try:
        batch = sender._next_batch()
        assert len(batch) == GSO_SEGMENTS and {len(d) for d in batch} == {p.MAX_DATAGRAM}
        sender._send(batch)
        assert sender.gso, "the kernel refused UDP GSO on loopback"
        got = receive(listener, GSO_SEGMENTS, sender.data_tagger)
        assert [d.seq for d in got] == list(range(GSO_SEGMENTS))

        sender.udp.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)  # GSO now fails: EINVAL
        batch = sender._next_batch()  # 4 full slices and the short last one
        assert [len(d) for d in batch][-1] < p.MAX_DATAGRAM and len(batch) == 5
        sender._send(batch)
        assert not sender.gso
        got += receive(listener, 5, sender.data_tagger)
        assert [d.seq for d in got] == list(range(21)) and sender.sent == 21
        assert b"".join(bytes(d.payload) for d in got) == source.body_bytes
        assert sender.wire_bytes == sum(len(d.payload) + 24 + 16 + 28 for d in got)
    finally:
        sender.udp.close()
        sender.listener.close()
