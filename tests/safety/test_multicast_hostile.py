"""Safety audit #12: hostile hosts on the LAN against a multicast session (docs/multicast.md §7).

Real net.Sender and engine receivers on the loopback interface (tests/net/loopback.py), real
sockets for the attackers:

(a) a client without the key that claims a 128 MiB message: closed at once, the sender's
    memory does not grow, a real receiver still gets the image;
(b) more back-channel connections than the limit, and idle ones: the extra ones are closed at
    once, the idle ones after the handshake timeout, a silent authenticated one after the idle
    timeout; a real receiver still gets the image;
(c) a recorded session (its datagrams and the sender's side of the back channel) replayed to a
    new receiver: refused, the target keeps its bytes; a receiver's recorded back channel
    replayed to the sender on a new connection: refused, no phantom receiver;
(d) NAKs for slices outside the catalog: refused and counted, never repaired; the session ends.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from pathlib import Path

import pytest

from clonebay import __version__
from clonebay.net import protocol as p
from clonebay.net.control import Channel, open_channel
from clonebay.net.pacing import Pacer
from clonebay.net.sender import SPARE_CONNECTIONS, Sender
from tests.diskcheck import sha256_range
from tests.net.conftest import SentImage, sent_image
from tests.net.loopback import (
    KEY,
    LOOPBACK,
    DatagramRecorder,
    Place,
    TcpRecorder,
    final,
    receiving,
    sending,
    wait_until,
)

__all__ = ["sent_image"]  # the fixture, shared with tests/net

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test disk and AF_PACKET need root")
MIB = 1 << 20


def rss() -> int:
    """This process's resident set now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """The highest RSS seen while the block runs (sampled every 5 ms)."""

    def __init__(self) -> None:
        self.before = self.peak = rss()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.before


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the peer closes ``sock`` within ``timeout`` s (EOF or reset), reading at most
    a few bytes of whatever it sends first."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def close_times(socks: list[socket.socket], began: float, timeout: float) -> list[float]:
    """When (seconds after ``began``) the peer closed each of ``socks``, watching all at once;
    those still open after ``timeout`` s are left out. Every socket is closed on return."""
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    times: list[float] = []
    deadline = time.monotonic() + timeout
    while by_fd and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            try:
                data = by_fd[fd].recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                times.append(time.monotonic() - began)
                poller.unregister(fd)
                by_fd.pop(fd).close()
    for sock in by_fd.values():
        sock.close()
    return times


def flood(sock: socket.socket, head: bytes, total: int) -> int:
    """Send ``head`` then zeros up to ``total`` bytes, until the peer closes: bytes sent."""
    sent = 0
    piece = bytes(256 << 10)
    sock.settimeout(20)
    try:
        sock.sendall(head)
        sent = len(head)
        while sent < total:
            sock.sendall(piece)
            sent += len(piece)
    except (ConnectionResetError, BrokenPipeError):
        pass
    return sent


def assert_image_received(sent: SentImage, target: Path) -> None:
    assert sha256_range(target, 0, sent.built.size) == sent.sha256, f"{target} differs"


def authenticated_peer(sender: Sender, name: str) -> tuple[Channel, bytes]:
    """A peer with the key, through the handshake like a receiver: (channel, catalog body)."""
    sock = socket.create_connection((LOOPBACK, sender.control_port), timeout=5)
    limits = {p.M_WELCOME: p.WELCOME.size, p.M_CATALOG: p.MAX_CATALOG}
    channel = open_channel(sock, KEY, sender.session, p.FROM_RECEIVER, limits=limits, timeout=5)
    channel.send(p.M_HELLO, json.dumps({"name": name, "version": __version__}).encode())
    welcome = channel.recv()
    catalog = channel.recv()
    assert welcome is not None and welcome[0] == p.M_WELCOME
    assert catalog is not None and catalog[0] == p.M_CATALOG
    channel.deadline = None
    return channel, catalog[1]


# -- (a) -------------------------------------------------------------------------------------


def test_unauthenticated_huge_message_does_not_grow_the_sender(
    sent_image: SentImage, tmp_path: Path
) -> None:
    """Two clients without the key, before the session starts: one sends a version-1 header
    claiming 128 MiB, one a well-formed greeting and then such a header; each streams 96 MiB
    of zeros after it. Each is cut off after the sender read at most the greeting and a 5-byte
    header: it gets to send no more than the sockets' buffers hold, and the sender's RSS stays
    within a few MiB. Then a real receiver gets the image."""
    place = Place()
    target = tmp_path / "target.img"
    claim = p.CONTROL_HEADER.pack(128 * MIB, p.M_HELLO)
    greeting = p.GREETING.pack(p.MAGIC, p.VERSION, p.FROM_RECEIVER, os.urandom(16))
    with sending(sent_image.image, place) as (sender, worker, _):
        sent = []
        with PeakRss() as memory:
            for head in (claim, greeting + claim):
                with socket.create_connection((LOOPBACK, sender.control_port)) as sock:
                    sent.append(flood(sock, head, 96 * MIB))
        assert all(n < 16 * MIB for n in sent), sent
        assert memory.growth < 16 * MIB, f"RSS grew by {memory.growth / MIB:.0f} MiB"
        assert wait_until(lambda: sender.peers.rejected == 2, 5)
        receiver = receiving(target, place, "real")
        receiver.result()
        status = final(worker)
    assert [r.state for r in status.receivers] == ["ok"]
    assert status.rejected == 2
    assert_image_received(sent_image, target)


# -- (b) -------------------------------------------------------------------------------------


def test_connections_past_the_limit_and_idle_ones_are_closed(
    sent_image: SentImage, tmp_path: Path
) -> None:
    """With the default limit (min_receivers + 64): 72 silent connections without the key take
    every slot left by the peer below; the 8 past the limit are closed at once, the 64 others
    after the handshake timeout (5 s). A peer with the key that goes silent after its HELLO is
    dropped after the idle timeout (here 2 s). A real receiver started meanwhile retries and
    gets the image."""
    place = Place()
    target = tmp_path / "target.img"
    limit = 1 + SPARE_CONNECTIONS
    with sending(sent_image.image, place, idle_timeout=2.0) as (sender, worker, _):
        silent, _ = authenticated_peer(sender, "silent")
        began = time.monotonic()
        idle = [socket.create_connection((LOOPBACK, sender.control_port)) for _ in range(72)]
        receiver = receiving(target, place, "real")
        assert wait_until(lambda: sender.refused >= 72 - limit + 1, 5)
        closed_at = close_times(idle, began, 10)
        assert len(closed_at) == 72, "a connection without the key was kept open"
        assert sum(1 for t in closed_at if t < 2) >= 72 - limit + 1  # refused at once
        assert max(closed_at) < 9  # the handshake timeout, not forever
        assert closed_by_peer(silent.sock, 6), "a silent authenticated peer was kept"
        silent.close()
        receiver.result()
        status = final(worker)
    states = {r.name: (r.state, r.message) for r in status.receivers}
    assert states["real"] == ("ok", "")
    assert states["silent"][0] == "lost" and "silent" in states["silent"][1]
    assert status.connections_refused >= 72 - limit + 1
    assert_image_received(sent_image, target)


# -- (c) -------------------------------------------------------------------------------------


def test_recorded_session_replayed_to_a_new_receiver_is_refused(
    sent_image: SentImage, tmp_path: Path
) -> None:
    """Session 1 runs to its end while a host on the LAN records the group's datagrams and the
    back channel's segments. Meanwhile it replays the receiver's side of the back channel to the
    sender on a new connection: refused, no phantom receiver. Then it replays session 1 (its
    ANNOUNCEs, a server on the announced port that answers with the recorded sender's bytes,
    every DATA datagram) to a new receiver with the same key: the receiver refuses the session
    and gives up when its join timeout ends, and its target keeps every byte it had."""
    place = Place()
    first = tmp_path / "first.img"
    datagrams = DatagramRecorder(place)
    segments = TcpRecorder(place.control_port)
    try:
        with sending(sent_image.image, place) as (sender, worker, _):
            receiver = receiving(first, place, "first")
            assert wait_until(lambda: len(segments.connections()) == 1, 30)
            client = segments.connections()[0]
            assert wait_until(lambda: len(segments.stream(client, True)) > 40, 10)
            hello = segments.stream(client, True)
            with socket.create_connection((LOOPBACK, sender.control_port)) as phantom:
                phantom.sendall(hello)
                assert closed_by_peer(phantom, 5), "a replayed receiver transcript was served"
            receiver.result()
            status = final(worker)
        recorded_sender = segments.stream(client, False)
    finally:
        recorded = datagrams.close()
        segments.close()
    assert [r.name for r in status.receivers] == ["first"]  # not the phantom
    assert status.rejected == 1
    assert_image_received(sent_image, first)
    assert len(recorded_sender) > 1000 and len(recorded) > status.datagrams

    target = tmp_path / "target.img"
    old = os.urandom(1 * MIB)
    with open(target, "wb") as f:
        f.write(old)
        f.truncate(sent_image.built.size)
    before = sha256_range(target, 0, sent_image.built.size)
    victim = receiving(target, place, "victim", join_timeout=10)
    refused = pytest.raises(p.ProtocolError, match="sessions refused: 1")
    with replaying(place, recorded, recorded_sender) as server, refused:
        victim.result(60)
    assert server.connections >= 1  # the victim did come to the replayed back channel
    assert sha256_range(target, 0, sent_image.built.size) == before


class replaying:  # noqa: N801 - used as a context manager
    """Replays a recorded session on ``place``: its ANNOUNCEs (not DONE) every 0.1 s, a server
    on the announced TCP port that sends the recorded sender's bytes to whoever connects, and,
    once someone did, every DATA datagram (paced at 20 MB/s, twice)."""

    def __init__(self, place: Place, datagrams: list[bytes], sender_bytes: bytes) -> None:
        tagger = p.Tagger(KEY)
        self.announces = []
        for raw in datagrams:
            d = p.parse_datagram(tagger, raw)
            if d is None or d.kind != p.T_ANNOUNCE:
                continue
            if p.parse_announce(d.payload).state != p.STATE_DONE:
                self.announces.append(raw)
        self.data = [raw for raw in datagrams if raw[5] == p.T_DATA]
        assert self.announces and self.data
        self.place = place
        self.sender_bytes = sender_bytes
        self.connections = 0
        self.stop = threading.Event()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LOOPBACK))
        self.server = socket.create_server((LOOPBACK, place.control_port))
        self.server.settimeout(0.1)
        self.threads = [
            threading.Thread(target=self._announce, daemon=True),
            threading.Thread(target=self._serve, daemon=True),
        ]

    def __enter__(self) -> replaying:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()
        self.server.close()
        self.udp.close()

    def _send(self, raw: bytes) -> None:
        self.udp.sendto(raw, (self.place.group, self.place.port))

    def _announce(self) -> None:
        i = 0
        while not self.stop.wait(0.1):
            self._send(self.announces[i % len(self.announces)])
            i += 1

    def _serve(self) -> None:
        replayed = False
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()
            if not replayed:
                replayed = True
                pacer = Pacer(20e6)
                for _ in range(2):
                    for raw in self.data:
                        if self.stop.is_set():
                            return
                        self._send(raw)
                        pacer.wait(len(raw))

    def _answer(self, conn: socket.socket) -> None:
        """The recorded sender's side; whatever the victim says is read and dropped."""
        with conn:
            try:
                conn.sendall(self.sender_bytes)
                conn.settimeout(1)
                while not self.stop.is_set():
                    try:
                        if not conn.recv(65536):
                            return
                    except TimeoutError:
                        continue
            except OSError:
                return


# -- (d) -------------------------------------------------------------------------------------


def test_naks_outside_the_catalog_are_refused_and_counted(
    sent_image: SentImage, tmp_path: Path
) -> None:
    """A peer with the key joins, says READY, then asks for (0, 2**63), for slices past the
    last one, for a range whose end wraps past 2**64, and in a NAK that claims more ranges than
    a NAK may hold. Each is refused and counted; nothing is repaired for them (the session
    needs fewer repairs than it has slices, where (0, 2**63) alone would repeat slices
    without end); the real receiver gets the image."""
    place = Place()
    target = tmp_path / "target.img"
    with sending(sent_image.image, place, min_receivers=2) as (sender, worker, _):
        hostile, _ = authenticated_peer(sender, "hostile")
        hostile.send(p.M_READY, b"")
        end = sender.datagrams
        for kind, ranges in (
            (p.NAK_GAP, [(0, 2**63)]),
            (p.NAK_CATCHUP, [(end, 10)]),
            (p.NAK_GAP, [(5, 1), (2**64 - 1, 1)]),
        ):
            hostile.send(p.M_NAK, p.pack_ranges(kind, ranges))
        hostile.send(p.M_NAK, p.NAK_HEAD.pack(p.NAK_GAP, p.MAX_NAK_RANGES + 1))
        assert wait_until(lambda: sender.peers.naks_refused == 4, 5)
        receiver = receiving(target, place, "real")
        assert wait_until(lambda: sender.state == p.STATE_RUNNING, 30)
        hostile.send(p.M_RESULT, json.dumps({"ok": False, "message": "hostile"}).encode())
        hostile.close()
        receiver.result()
        status = final(worker)
    assert status.naks_refused == 4 and status.as_dict()["naks_refused"] == 4
    assert status.repairs < status.datagrams // 2, (status.repairs, status.datagrams)
    states = {r.name: r.state for r in status.receivers}
    assert states == {"hostile": "failed", "real": "ok"}
    assert_image_received(sent_image, target)
