"""The multicast sender: one session, many receivers, every datagram sent once where possible.

A session has three phases (docs/multicast.md §5):

1. **Waiting.** The sender announces the session on the group twice a second (session id, the
   TCP port of its back channel, how many receivers joined) and accepts receivers: each
   connects, gets the catalog, and says READY once its target passed the restore's checks. The
   session starts when ``min_receivers`` are ready, when ``wait`` seconds have passed with at
   least one ready, or when the operator says so (the ``start`` event).
2. **Running.** The first pass sends every object's slices in sequence order at the paced
   rate. Between any two new datagrams, repairs come first: datagrams that some receiver NAKed
   as lost in flight (the union of all NAKs, each sequence number queued once however many
   receivers lack it). Datagrams that a late joiner missed because it was not there yet are
   queued apart and sent only after the first pass, so a late joiner never slows the others.
3. **Done.** When every receiver that joined has reported its outcome (or dropped its
   connection), the sender announces DONE a few times and returns every receiver's outcome.

The back channel is served by one thread per connection, at most ``max_connections`` of them:
a connection past that is closed at once (and counted); one that does not authenticate within
``handshake_timeout`` or goes silent for ``idle_timeout`` is closed (peers.py). DATA is tagged
under a data key of this session (a fresh nonce, protocol.data_key) that receivers learn only
through their own authenticated connection; ANNOUNCE under the session key, so anyone with the
key can find the session.
"""

from __future__ import annotations

import bisect
import collections
import errno
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from clonebay.errors import CancelledError, ClonebayError
from clonebay.net import protocol as p
from clonebay.net.pacing import Pacer, RateControl
from clonebay.net.peers import Peers, ReceiverState, catalog_message

UDP_SEGMENT = 103  # <linux/udp.h>: the socket option / control message of UDP GSO
GSO_SEGMENTS = 16  # datagrams handed to the kernel in one send: 23 KiB, 0.8 ms at 30 MB/s
ANNOUNCE_EVERY = 0.25  # seconds; also how soon a receiver that joins late finds the session
TAIL_ANNOUNCE_EVERY = 0.1  # after the first pass: receivers NAK its last slices sooner
CONTROL_EVERY = 0.5  # seconds between rate updates and status callbacks
BODY_CACHE = 64 << 20  # object bodies kept for slicing (repairs revisit recent objects)
DONE_ANNOUNCES = 5
SPARE_CONNECTIONS = 64  # back-channel connections allowed beyond min_receivers by default
HANDSHAKE_TIMEOUT = 5.0  # s for a new connection's greeting and authentic HELLO (LAN: ms)
IDLE_TIMEOUT = 30.0  # s of silence from a receiver (it reports every 0.5 s) before it is lost


class NoReceiversError(ClonebayError):
    """Nobody joined the session in time."""

    title = "No receivers"
    exit_code = 10


class ObjectSource(Protocol):
    """What the engine offers: a catalog (opaque here) and objects read on demand."""

    @property
    def catalog(self) -> bytes: ...

    @property
    def sizes(self) -> Sequence[int]: ...

    def body(self, number: int) -> bytes: ...


@dataclass(frozen=True)
class SendConfig:
    key: bytes
    group: str = p.DEFAULT_GROUP
    port: int = p.DEFAULT_PORT
    control_port: int = 0  # 0: any free port (it is announced)
    interface: str = ""  # local IPv4 address to send from; "" lets the routing table choose
    ttl: int = 1  # one hop: the LAN segment
    rate: float = 40e6  # bytes per second, the cap
    min_receivers: int = 1
    wait: float | None = None  # start after this many seconds with at least one receiver
    max_connections: int = 0  # back-channel connections at once; 0: min_receivers + 64
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT

    @property
    def connection_limit(self) -> int:
        return self.max_connections or self.min_receivers + SPARE_CONNECTIONS


@dataclass
class SessionStatus:
    """A snapshot for progress displays and the final report."""

    state: str
    receivers: list[ReceiverState]
    image_bytes: int
    datagrams: int
    position: int
    sent: int = 0
    repairs: int = 0
    wire_bytes: int = 0
    rate: float = 0.0
    naks: int = 0
    rejected: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    naks_refused: int = 0  # NAKs asking for slices outside the catalog: refused, not repaired
    connections_refused: int = 0  # past max_connections: closed at once

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "receivers": [r.as_dict() for r in self.receivers],
            "image_bytes": self.image_bytes,
            "datagrams": self.datagrams,
            "position": self.position,
            "sent": self.sent,
            "repairs": self.repairs,
            "wire_bytes": self.wire_bytes,
            "rate": round(self.rate),
            "naks": self.naks,
            "rejected_connections": self.rejected,
            "refused_connections": self.connections_refused,
            "naks_refused": self.naks_refused,
            "seconds": round(self.seconds, 1),
        }


class Sender:
    """Runs one session for ``source``; ``run`` returns when every receiver has finished."""

    def __init__(
        self,
        config: SendConfig,
        source: ObjectSource,
        status: Callable[[SessionStatus], None] | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.status_cb = status
        self.session = secrets.randbits(63)
        self.firsts: list[int] = []
        total = 0
        for size in source.sizes:
            self.firsts.append(total)
            total += -(-size // p.PAYLOAD_SIZE)
        self.datagrams = total
        data_nonce = secrets.token_bytes(p.NONCE_SIZE)
        self.peers = Peers(
            config.key,
            self.session,
            catalog_message(source.catalog, source.sizes, total),
            data_nonce,
            datagrams=total,
            timeouts=(config.handshake_timeout, config.idle_timeout),
        )
        self.refused = 0  # connections closed at once: max_connections were being served
        self.state = p.STATE_WAITING
        self.position = 0  # next sequence number of the first pass
        self.sent = self.repairs = self.wire_bytes = 0
        self.control = RateControl(config.rate)
        self.cache: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self.cached_bytes = 0
        self.started = time.monotonic()
        self.tagger = p.Tagger(config.key)  # ANNOUNCE
        self.data_tagger = p.Tagger(p.data_key(config.key, self.session, data_nonce))  # DATA
        self.gso = True  # until the kernel refuses it once
        self.udp = self._udp_socket()
        self.limit = config.connection_limit
        self.listener = socket.create_server(("", config.control_port), backlog=128)
        self.listener.settimeout(0.2)
        self.control_port = self.listener.getsockname()[1]

    def _udp_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.config.ttl)
        if self.config.interface:
            sock.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.config.interface)
            )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.connect((self.config.group, self.config.port))  # no address to parse per send
        return sock

    # -- the session -----------------------------------------------------------------------

    def run(
        self, start: threading.Event | None = None, cancel: threading.Event | None = None
    ) -> SessionStatus:
        start = start or threading.Event()
        cancel = cancel or threading.Event()
        acceptor = threading.Thread(target=self._accept, name="clonebay-accept", daemon=True)
        acceptor.start()
        try:
            self._wait_for_receivers(start, cancel)
            self.state = p.STATE_RUNNING
            self.started = time.monotonic()
            self._transmit(cancel)
            self.state = p.STATE_DONE
            for _ in range(DONE_ANNOUNCES):
                self._announce()
                time.sleep(0.05)
        finally:
            self.state = p.STATE_DONE
            self.peers.closing = True
            acceptor.join()
            self.listener.close()
            for channel in self.peers.channels:
                channel.close()
            self.udp.close()
        return self.status()

    def status(self) -> SessionStatus:
        return SessionStatus(
            p.STATE_NAMES[self.state],
            self.peers.snapshot(),
            sum(self.source.sizes),
            self.datagrams,
            self.position,
            self.sent,
            self.repairs,
            self.wire_bytes,
            self.control.rate,
            self.peers.naks,
            self.peers.rejected,
            time.monotonic() - self.started,
            naks_refused=self.peers.naks_refused,
            connections_refused=self.refused,
        )

    def _wait_for_receivers(self, start: threading.Event, cancel: threading.Event) -> None:
        began = time.monotonic()
        wait = self.config.wait
        next_announce = 0.0
        while True:
            if cancel.is_set():
                raise CancelledError("send cancelled before the session started")
            now = time.monotonic()
            if now >= next_announce:
                self._announce()
                self._report()
                next_announce = now + ANNOUNCE_EVERY
            ready = self.peers.ready()
            if ready >= self.config.min_receivers or (ready and start.is_set()):
                return
            if wait is not None and now - began >= wait:
                if ready:
                    return
                if not self.peers.joined():
                    raise NoReceiversError(
                        f"no receiver joined within {wait:.0f} s: are they on the same network"
                        " segment, and do they use the same group and port?"
                    )
            # a receiver's READY sets wake; the operator's word is seen within 0.1 s
            self.peers.wake.wait(0.1)
            self.peers.wake.clear()

    def _transmit(self, cancel: threading.Event) -> None:
        pacer = Pacer(self.control.rate)
        next_announce = next_control = 0.0
        end_announced = False
        while True:
            if cancel.is_set():
                raise CancelledError("send cancelled: the receivers are incomplete")
            now = time.monotonic()
            if now >= next_announce:
                self._announce()
                tail = self.position >= self.datagrams
                next_announce = now + (TAIL_ANNOUNCE_EVERY if tail else ANNOUNCE_EVERY)
            if now >= next_control:
                pacer.rate = self._adapt_rate()
                self._report()
                next_control = now + CONTROL_EVERY
                if self.peers.all_finished():
                    return
            batch = self._next_batch()
            if batch:
                if self.position == self.datagrams and not end_announced:
                    next_announce = 0.0  # the first pass is over: say so at once (§6 NAKs)
                    end_announced = True
                pacer.wait(self._send(batch))
            elif self.peers.all_finished():
                return
            else:
                self.peers.wake.wait(0.05)
                self.peers.wake.clear()

    def _next_batch(self) -> list[bytes]:
        """Up to GSO_SEGMENTS DATA datagrams to send next: repairs first, then the first pass.
        A short datagram (an object's last slice) ends the batch: in one GSO send every
        datagram but the last must have the full size."""
        batch: list[bytes] = []
        while len(batch) < GSO_SEGMENTS:
            first_pass_done = self.position >= self.datagrams
            repair = self.peers.next_repair(first_pass_done)
            if repair is not None:
                seq, flags = repair[0], 1
                self.repairs += 1
            elif not first_pass_done:
                seq, flags = self.position, 0
                self.position += 1
            else:
                break
            datagram = self._data(seq, flags)
            batch.append(datagram)
            if len(datagram) < p.MAX_DATAGRAM:
                break
        return batch

    def _data(self, seq: int, flags: int) -> bytes:
        number = bisect.bisect_right(self.firsts, seq) - 1
        body = self._body(number)
        at = (seq - self.firsts[number]) * p.PAYLOAD_SIZE
        payload = memoryview(body)[at : at + p.PAYLOAD_SIZE]
        return p.pack_datagram(self.data_tagger, p.T_DATA, self.session, seq, payload, flags=flags)

    def _send(self, batch: list[bytes]) -> int:
        """Send ``batch``; the bytes it puts on the wire (with IPv4 and UDP headers).

        Several datagrams go to the kernel in one call with UDP generic segmentation offload
        (UDP_SEGMENT, Linux 4.18): the kernel cuts the buffer into datagrams of MAX_DATAGRAM
        bytes, each a datagram of its own on the wire, in the network card when it can and in
        software otherwise. Without it every datagram costs a system call (9.2 against 6.1 us
        of sender CPU per datagram on our VM, docs/multicast.md §4). A kernel or route that
        refuses it once (an MTU below 1,500 bytes, no UDP checksums) gets one call per
        datagram from then on."""
        together = len(batch) > 1 and self.gso
        if together:
            try:
                self.udp.sendmsg(
                    [b"".join(batch)],
                    [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", p.MAX_DATAGRAM))],
                )
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                    raise
                self.gso = together = False
        if not together:
            for datagram in batch:
                self.udp.send(datagram)
        wire = sum(len(d) for d in batch) + 28 * len(batch)  # + IPv4 and UDP headers
        self.sent += len(batch)
        self.wire_bytes += wire
        return wire

    def _body(self, number: int) -> bytes:
        body = self.cache.get(number)
        if body is not None:
            self.cache.move_to_end(number)
            return body
        body = self.source.body(number)
        if len(body) != self.source.sizes[number]:
            raise ClonebayError(
                f"object {number} is {len(body)} bytes, the catalog says"
                f" {self.source.sizes[number]}: did the source change during the session?"
            )
        self.cache[number] = body
        self.cached_bytes += len(body)
        while self.cached_bytes > BODY_CACHE and len(self.cache) > 1:
            _, old = self.cache.popitem(last=False)
            self.cached_bytes -= len(old)
        return body

    def _announce(self) -> None:
        announce = p.Announce(
            self.state,
            self.control_port,
            min(len(self.peers.receivers), 0xFFFF),
            len(self.source.sizes),
            self.datagrams,
            self.position,
            int(self.control.rate),
        )
        datagram = p.pack_datagram(
            self.tagger, p.T_ANNOUNCE, self.session, 0, p.pack_announce(announce)
        )
        try:
            self.udp.send(datagram)
        except OSError:
            if self.state == p.STATE_DONE:
                return
            raise
        self.wire_bytes += len(datagram) + 28

    def _adapt_rate(self) -> float:
        """Feed each running receiver's loss counters since the last update to the controller."""
        deltas = []
        for r in self.peers.snapshot():
            if r.state != "running":
                continue
            c = r.counters
            now = (c.get("received", 0), c.get("gaps", 0), c.get("overflow", 0))
            deltas.append((now[0] - r.last[0], now[1] - r.last[1], now[2] - r.last[2]))
            r.last = now
        return self.control.update(deltas)

    def _report(self) -> None:
        if self.status_cb is not None:
            self.status_cb(self.status())

    def _accept(self) -> None:
        while not self.peers.closing:
            try:
                conn, addr = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.peers.lock:
                admit = self.state != p.STATE_DONE and self.peers.active < self.limit
                if admit:
                    self.peers.active += 1
            if not admit:
                self.refused += 1
                conn.close()
                continue
            threading.Thread(
                target=self.peers.serve,
                args=(conn, addr[0], self.peers.wake.set),
                name="clonebay-peer",
                daemon=True,
            ).start()
