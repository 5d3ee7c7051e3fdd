"""The wire format without a network: datagram tags, control-channel authentication, ranges."""

from __future__ import annotations

import hmac
import socket
import threading

import pytest

from clonebay.net import protocol as p
from clonebay.net.control import Channel, open_channel
from clonebay.net.pacing import RateControl, loss_fraction
from clonebay.net.peers import catalog_message, parse_catalog_message
from clonebay.net.ranges import RangeSet
from clonebay.net.receiver import ReceiveConfig, Receiver
from clonebay.net.repair import Partial, Retries, missing_ranges

KEY = p.derive_key("abcd-efgh")
TAGGER = p.Tagger(KEY)


def test_datagram_round_trip_and_every_flipped_bit_refused() -> None:
    raw = p.pack_datagram(TAGGER, p.T_DATA, 77, 123456, b"payload bytes", flags=1)
    assert len(raw) == p.DATAGRAM_HEADER.size + 13 + p.TAG_SIZE
    d = p.parse_datagram(TAGGER, raw)
    assert d is not None and (d.kind, d.flags, d.session, d.seq) == (p.T_DATA, 1, 77, 123456)
    assert bytes(d.payload) == b"payload bytes"
    for bit in range(len(raw) * 8):
        bad = bytearray(raw)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert p.parse_datagram(TAGGER, bytes(bad)) is None, f"bit {bit} flipped was accepted"


def test_tag_is_hmac_sha256_truncated() -> None:
    """The precomputed-state tagger against the standard library's HMAC, for keys shorter
    than, equal to and longer than SHA-256's 64-byte block, and several data sizes."""
    for key in (KEY, bytes(range(64)), bytes(range(100))):
        tagger = p.Tagger(key)
        for size in (0, 1, 55, 64, 1456):
            data = bytes((i * 7 + size) & 0xFF for i in range(size))
            want = hmac.digest(key, data, "sha256")[: p.TAG_SIZE]
            assert tagger.tag(data) == want and tagger.check(memoryview(data), want)
            assert not tagger.check(data, bytes(p.TAG_SIZE))


def test_wrong_key_refused_and_passphrase_normalised() -> None:
    raw = p.pack_datagram(TAGGER, p.T_ANNOUNCE, 1, 0, b"x")
    assert p.parse_datagram(p.Tagger(p.derive_key("abcd-efgx")), raw) is None
    assert p.derive_key("ABCD efgh") == KEY
    phrase = p.new_passphrase()
    assert len(phrase) == 19 and phrase.count("-") == 3
    assert p.PAYLOAD_SIZE + p.DATAGRAM_HEADER.size + p.TAG_SIZE == p.MAX_DATAGRAM == 1472


LIMITS = {p.M_HELLO: p.PREAUTH_LIMIT, p.M_CATALOG: 1 << 20}


def channel_pair(
    sender_key: bytes = KEY, receiver_key: bytes = KEY, session: int = 5
) -> tuple[Channel, Channel]:
    """Two ends of a socketpair after their greetings: (the sender's, the receiver's)."""
    a, b = socket.socketpair()
    out: list[Channel] = []
    t = threading.Thread(
        target=lambda: out.append(
            open_channel(b, receiver_key, session, p.FROM_RECEIVER, limits=LIMITS, timeout=5)
        )
    )
    t.start()
    sender = open_channel(a, sender_key, session, p.FROM_SENDER, limits=LIMITS, timeout=5)
    t.join()
    return sender, out[0]


def test_control_channel_refuses_another_key_and_replays() -> None:
    sender, receiver = channel_pair()
    sender.send(p.M_CATALOG, b"one")
    assert receiver.recv() == (p.M_CATALOG, b"one")
    sender.sent = 0  # the same counter again: what a replay of message 0 looks like
    sender.send(p.M_CATALOG, b"one")
    with pytest.raises(p.AuthenticationError, match="authentication"):
        receiver.recv()
    stranger, victim = channel_pair(sender_key=p.derive_key("other"))
    stranger.send(p.M_CATALOG, b"evil")
    with pytest.raises(p.AuthenticationError):
        victim.recv()
    for ch in (sender, receiver, stranger, victim):
        ch.close()


def test_a_message_recorded_on_one_connection_fails_on_the_next() -> None:
    """Same key, same session, same counter: only the nonces differ, and they decide."""
    sender, receiver = channel_pair()
    recorded = []
    sender.sock = _Tap(sender.sock, recorded)  # type: ignore[assignment]
    sender.send(p.M_CATALOG, b"the old image")
    assert receiver.recv() == (p.M_CATALOG, b"the old image")
    sender2, receiver2 = channel_pair()
    sender2.sock.sendall(recorded[0])  # the recorded message, byte for byte
    with pytest.raises(p.AuthenticationError):
        receiver2.recv()
    for ch in (sender, receiver, sender2, receiver2):
        ch.close()


class _Tap:
    """A socket whose sent bytes are also kept (what a recording of the wire holds)."""

    def __init__(self, sock: socket.socket, into: list[bytes]) -> None:
        self.sock, self.into = sock, into

    def sendall(self, data: bytes) -> None:
        self.into.append(bytes(data))
        self.sock.sendall(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


def test_first_message_larger_than_the_preauth_limit_is_refused_unread() -> None:
    """A peer that claims a 128 MiB message before anything it sent passed a tag: refused after
    reading its 5-byte header, and the body is never read."""
    sender, receiver = channel_pair()
    sender.sock.sendall(p.CONTROL_HEADER.pack(128 << 20, p.M_CATALOG) + bytes(64 << 10))
    with pytest.raises(p.ProtocolError, match="refused"):
        receiver.recv()
    # the 64 KiB that followed the header are still unread in the socket
    receiver.sock.setblocking(False)
    assert len(receiver.sock.recv(1 << 20)) == 64 << 10
    sender.close()
    receiver.close()


def test_messages_of_unexpected_types_and_oversized_ones_are_refused() -> None:
    sender, receiver = channel_pair()
    sender.send(p.M_HELLO, b"{}")
    assert receiver.recv() == (p.M_HELLO, b"{}")
    sender.send(p.M_NAK, b"")  # not a type the receiver takes
    with pytest.raises(p.ProtocolError, match="unexpected"):
        receiver.recv()
    sender, receiver = channel_pair()
    sender.send(p.M_HELLO, b"{}")
    receiver.recv()
    sender.sock.sendall(p.CONTROL_HEADER.pack((1 << 20) + 2 + p.TAG_SIZE, p.M_CATALOG))
    with pytest.raises(p.ProtocolError, match="refused"):
        receiver.recv()


def test_greeting_of_another_version_is_refused() -> None:
    a, b = socket.socketpair()
    a.sendall(p.GREETING.pack(p.MAGIC, 1, p.FROM_SENDER, bytes(16)))
    with pytest.raises(p.ProtocolError, match="version 1"):
        open_channel(b, KEY, 5, p.FROM_RECEIVER, limits=LIMITS, timeout=5)
    a.close()
    b.close()


def test_a_silent_peer_times_out_during_the_handshake() -> None:
    a, b = socket.socketpair()
    with pytest.raises(TimeoutError):
        open_channel(b, KEY, 5, p.FROM_SENDER, limits=LIMITS, timeout=0.2)
    a.close()
    b.close()


def test_nak_ranges_must_lie_inside_the_catalog() -> None:
    assert p.ranges_within(p.NAK_GAP, [(0, 10), (90, 10)], 100)
    assert not p.ranges_within(p.NAK_GAP, [(95, 6)], 100)
    assert not p.ranges_within(p.NAK_GAP, [(0, 2**63)], 100)
    assert not p.ranges_within(p.NAK_CATCHUP, [(2**64 - 1, 1)], 100)
    assert not p.ranges_within(p.NAK_GAP, [(5, 0)], 100)
    assert not p.ranges_within(7, [(0, 1)], 100)
    with pytest.raises(p.ProtocolError):
        p.parse_ranges(p.NAK_HEAD.pack(p.NAK_GAP, p.MAX_NAK_RANGES + 1))


def test_catalog_message_counts_datagrams() -> None:
    sizes = [1, p.PAYLOAD_SIZE, p.PAYLOAD_SIZE + 1, 4 << 20]
    total = 1 + 1 + 2 + -(-(4 << 20) // p.PAYLOAD_SIZE)
    body = catalog_message(b"engine", sizes, total)
    assert parse_catalog_message(body) == (sizes, total, b"engine")
    with pytest.raises(p.ProtocolError):
        parse_catalog_message(catalog_message(b"engine", sizes, total + 1))


def test_nak_ranges_round_trip() -> None:
    body = p.pack_ranges(p.NAK_CATCHUP, [(0, 5), (100, 1)])
    assert p.parse_ranges(body) == (p.NAK_CATCHUP, [(0, 5), (100, 1)])
    with pytest.raises(p.ProtocolError):
        p.parse_ranges(body[:-1])


def test_range_set_merges_and_pops_in_order() -> None:
    rs = RangeSet()
    rs.add(10, 5)  # 10-14
    rs.add(20, 2)  # 20-21
    rs.add(13, 8)  # 13-20 joins both
    rs.add(30, 1)
    rs.add(12, 1)  # inside
    assert rs.ranges() == [(10, 12), (30, 1)] and len(rs) == 13
    assert [rs.pop_first() for _ in range(13)] == [*range(10, 22), 30]
    assert not rs


QUIET = (1000, 0, 0)  # (received, lost, overflow) of one receiver in one interval
OVERFLOWED = (1000, 0, 5)  # its socket buffer overflowed: it cannot keep up
LOSSY = (700, 300, 0)  # 30 % lost


def test_rate_drops_when_a_quarter_of_receivers_overflow_and_recovers() -> None:
    control = RateControl(40e6)
    assert control.update([OVERFLOWED] + [QUIET] * 7) == 40e6  # one in eight: left alone
    assert control.update([OVERFLOWED] * 2 + [QUIET] * 6) == pytest.approx(28e6)
    assert control.update([OVERFLOWED] * 8) == pytest.approx(19.6e6)
    for _ in range(100):
        control.update([QUIET] * 8)
    assert control.rate == 40e6  # back at the cap, never above
    for _ in range(100):
        control.update([OVERFLOWED] * 4)
    assert control.rate == control.floor > 0
    assert control.update([(950, 50, 0)] * 4) > control.floor  # 5 % loss: repairs, not slower


def test_heavy_loss_that_slowing_down_does_not_lower_stops_counting() -> None:
    control = RateControl(40e6)
    assert control.update([LOSSY] * 4) == pytest.approx(28e6)  # maybe congestion: slower
    assert control.update([LOSSY] * 4) == pytest.approx(28e6)  # held while the reports lag
    assert control.update([LOSSY] * 4) == pytest.approx(30e6)  # as lossy as before: climb back
    for _ in range(10):
        control.update([LOSSY] * 4)
    assert control.rate == 40e6 and not control.loss_counts
    assert control.update([OVERFLOWED] * 4) == pytest.approx(28e6)  # overflow still counts


def test_heavy_loss_that_slowing_down_lowers_is_congestion() -> None:
    control = RateControl(40e6)
    control.update([LOSSY] * 4)
    control.update([LOSSY] * 4)
    assert control.update([(950, 50, 0)] * 4) == pytest.approx(30e6)  # it helped
    assert control.loss_counts
    assert control.update([LOSSY] * 4) == pytest.approx(21e6)  # so heavy loss slows it again


def test_loss_fraction() -> None:
    assert loss_fraction(700, 300) == pytest.approx(0.3)
    assert loss_fraction(0, 0) == 0.0


def test_missing_ranges_of_a_partial_object() -> None:
    part = Partial(10 * 1432, 10)
    for k in (0, 1, 4, 9):
        part.have[k] = 1
    into: list[tuple[int, int]] = []
    missing_ranges(into, 100, 110, part)
    assert into == [(102, 2), (105, 4)]
    missing_ranges(into, 200, 203, None)  # nothing arrived: all of it
    assert into[-1] == (200, 3)
    into.clear()
    missing_ranges(into, 100, 110, part, start=104)  # only what was lost since slice 4
    assert into == [(105, 4)]
    missing_ranges(into, 200, 203, None, start=201)
    assert into[-1] == (201, 2)


def test_retries_back_off_and_wait_for_the_sender_to_drain() -> None:
    r = Retries()
    assert r.due(7, now=0.0)
    r.asked([7], now=0.0, datagrams=1, rate=40e6)
    assert not r.due(7, now=0.1) and r.due(7, now=0.16)
    r.asked([7], now=1.0, datagrams=1, rate=40e6)  # second ask: twice as long
    assert not r.due(7, now=1.25) and r.due(7, now=1.31)
    r.asked([8], now=0.0, datagrams=100_000, rate=10e6)  # 147 MB at 10 MB/s: ~15 s, x 1.5
    assert not r.due(8, now=20.0) and r.due(8, now=23.0)
    for now in (2.0, 3.0, 4.0):  # after the first pass: no growing waits
        r.asked([7], now=now, datagrams=1, rate=40e6, backoff=False)
        assert not r.due(7, now=now + 0.1) and r.due(7, now=now + 0.16)


class _Recorder:
    """A back channel that keeps what is sent on it."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def send(self, kind: int, body: bytes) -> None:
        self.sent.append((kind, body))

    def naks(self) -> list[list[tuple[int, int]]]:
        out = [p.parse_ranges(body)[1] for kind, body in self.sent if kind == p.M_NAK]
        self.sent.clear()
        return out


def test_receiver_asks_for_new_losses_at_once_and_old_ones_after_their_retry_time() -> None:
    """A big object still arriving: what it lost after the first NAK is asked for at the next
    NAK, not after the object's retry time; what was already asked for waits for that."""
    receiver = Receiver(ReceiveConfig(key=KEY, port=7799, interface="127.0.0.1"))
    try:
        receiver._setup([100 * p.PAYLOAD_SIZE, 10])
        channel = _Recorder()
        payload = memoryview(bytes(p.PAYLOAD_SIZE))

        def first_pass(seqs: range, lost: int) -> None:
            for seq in seqs:
                if seq != lost:
                    receiver._place(seq, 0, payload, _NoSink())
            receiver.announce = p.Announce(p.STATE_RUNNING, 1, 1, 2, 101, seqs.stop, 30_000_000)

        first_pass(range(50), lost=10)
        receiver._nak(channel, now=0.0)  # type: ignore[arg-type]
        assert channel.naks() == [[(10, 1)]]
        first_pass(range(50, 100), lost=60)
        receiver._nak(channel, now=0.01)  # type: ignore[arg-type]
        assert channel.naks() == [[(60, 1)]]  # the new loss only
        receiver._nak(channel, now=0.02)  # type: ignore[arg-type]
        assert channel.naks() == []
        receiver._nak(channel, now=0.2)  # the retry time has come: everything still missing
        assert channel.naks() == [[(10, 1), (60, 1)]]
        assert receiver.gaps == 2 and receiver.received == 98
    finally:
        receiver.sock.close()


def test_receiver_nak_holds_no_more_ranges_than_the_sender_accepts() -> None:
    """20 objects of 2,000 slices, every other slice lost: 20,000 ranges missing. Each NAK holds
    at most MAX_NAK_RANGES of them, every one inside the catalog (the sender refuses others)."""
    receiver = Receiver(ReceiveConfig(key=KEY, port=7798, interface="127.0.0.1"))
    try:
        receiver._setup([2000 * p.PAYLOAD_SIZE] * 20)
        payload = memoryview(bytes(p.PAYLOAD_SIZE))
        for seq in range(0, receiver.end, 2):
            receiver._place(seq, 0, payload, _NoSink())
        end = receiver.end
        receiver.announce = p.Announce(p.STATE_RUNNING, 1, 1, 20, end, end, 30_000_000)
        channel = _Recorder()
        receiver._nak(channel, now=0.0)  # type: ignore[arg-type]
        naks = [p.parse_ranges(body) for kind, body in channel.sent if kind == p.M_NAK]
        assert naks and all(len(ranges) <= p.MAX_NAK_RANGES for _, ranges in naks)
        assert all(p.ranges_within(kind, ranges, end) for kind, ranges in naks)
        assert sum(len(ranges) for _, ranges in naks) == p.MAX_NAK_RANGES
    finally:
        receiver.sock.close()


class _NoSink:
    def prepare(self, catalog: bytes, sizes: object) -> None: ...

    def put(self, number: int, body: bytearray) -> None:
        raise AssertionError("no object is complete in this test")

    def finish(self) -> list[str]:
        return []


def test_receiver_reads_the_kernels_drop_count() -> None:
    """A receiver that does not keep up: the kernel drops what its buffer cannot hold, and the
    receiver's ``overflow`` counter (what the sender's rate control listens to) says so."""
    receiver = Receiver(ReceiveConfig(key=KEY, port=7796, interface="127.0.0.1"))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert receiver._drops() == 0
        receiver.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        for _ in range(200):
            sender.sendto(bytes(p.MAX_DATAGRAM), (p.DEFAULT_GROUP, 7796))
        assert 0 < receiver._drops() < 200
    finally:
        sender.close()
        receiver.sock.close()
