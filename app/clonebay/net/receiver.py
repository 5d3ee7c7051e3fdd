"""The multicast receiver: join a session, collect every object, hand each one on as it completes.

The receiver listens on the group, takes the first authentic ANNOUNCE, connects to the
sender's back channel and gets WELCOME and the catalog (every object's size; the rest is the
engine's). The connection is bound to a nonce this receiver chose (net/joining.py), and the
WELCOME gives the nonce of the session's data key, so only DATA of the sender that answered on
that connection passes its tag: a recorded session replayed onto the group is refused. A
session whose back channel fails its tag is ignored from then on; one whose back channel cannot
be reached (or closes at once: the sender is at its connection limit) is tried again at its
next ANNOUNCE.
Then every DATA datagram is placed by its sequence number: objects complete in any order
(first pass, repairs, catch-up after a late join) and each complete object goes to the sink at
once, so nothing but the objects still in flight is held in memory.

What it lacks it asks for in NAKs on the back channel (docs/multicast.md §6): a datagram counts
as lost once the first pass is past it; missing datagrams are sent as ranges, one message per
interval for all objects (aggregated), with a random jitter and an interval that grows with the
number of receivers, and an object asked for is not asked for again until its retry time has
passed, which doubles each time (backoff) and is never shorter than the sender needs to send
what was asked. Datagrams sent before this receiver joined are asked for as *catch-up*, which the
sender serves after its first pass.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from clonebay.errors import CancelledError, ClonebayError
from clonebay.net import protocol as p
from clonebay.net.control import Channel
from clonebay.net.joining import alive, join
from clonebay.net.peers import parse_catalog_message
from clonebay.net.repair import Partial, Retries, missing_ranges

SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>: SO_RCVBUF past rmem_max, for root
SO_MEMINFO = 55  # <asm-generic/socket.h>: the socket's memory counters, u32 each
SK_MEMINFO_DROPS = 8  # <linux/sock_diag.h>: datagrams dropped, mostly a full receive buffer
COUNTERS = (
    "received",
    "repairs",
    "duplicates",
    "rejected",
    "gaps",
    "overflow",
    "naks",
    "sessions_refused",
)
HEAD = p.DATAGRAM_HEADER
REORDER = 64  # datagrams behind the newest one before a missing one counts as lost
NAK_EVERY = 0.1  # seconds, times a jitter in [0.5, 1.5), times receivers / 16 (at least 1)
STATUS_EVERY = 0.5
MAX_NAK_RANGES = p.MAX_NAK_RANGES  # 256 KiB of ranges in one message; the rest waits
COALESCE = 0.005  # s to pause once the socket is empty: ~100 datagrams gather at 30 MB/s
DRAIN = 512  # datagrams taken in one go before the timers (NAK, status) get a turn
RCVBUF = 16 << 20  # ~11,000 datagrams: a 0.3 s stall at 50 MB/s loses nothing


class ObjectSink(Protocol):
    """Where complete objects go (the engine's restore-as-it-arrives)."""

    def prepare(self, catalog: bytes, sizes: Sequence[int]) -> None: ...

    def put(self, number: int, body: bytearray) -> None: ...

    def finish(self) -> list[str]: ...


@dataclass(frozen=True)
class ReceiveConfig:
    key: bytes
    group: str = p.DEFAULT_GROUP
    port: int = p.DEFAULT_PORT
    interface: str = ""  # local IPv4 address to join on; "" lets the kernel choose
    name: str = ""
    join_timeout: float | None = None  # give up when no session is announced in this time


@dataclass
class ReceiveStatus:
    state: str  # searching, joined, receiving, finishing, ok, failed
    done: int = 0
    total: int = 0
    objects_done: int = 0
    objects: int = 0
    sender: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "objects_done": self.objects_done,
            "objects": self.objects,
            "sender": self.sender,
            "counters": dict(self.counters),
            "seconds": round(self.seconds, 1),
        }


class Receiver:
    """One receiver; ``run`` returns the final status or raises after reporting the failure."""

    def __init__(
        self, config: ReceiveConfig, status: Callable[[ReceiveStatus], None] | None = None
    ) -> None:
        self.config = config
        self.status_cb = status
        # the counters (docs/multicast.md §7), plain attributes: the hot loop bumps them
        self.received = self.repairs = self.duplicates = self.rejected = 0
        self.gaps = self.overflow = self.naks = 0
        self.sessions_refused = 0  # announced sessions whose back channel was not authentic
        self.tagger = p.Tagger(config.key)  # ANNOUNCE; DATA: data_tagger, from the WELCOME
        self.data_tagger = self.tagger
        self.state = "searching"
        self.started = time.monotonic()
        self.sender = ""
        self.sizes: list[int] = []
        self.firsts: list[int] = []
        self.done_flags = bytearray()
        self.partial: dict[int, Partial] = {}
        self.retries = Retries()
        self.remaining = 0
        self.done_bytes = 0
        self.low = 0  # every object below is complete
        self.end = 0  # sequence numbers in all
        self.newest = -1  # highest first-pass sequence number seen
        self.join = 0  # first-pass position when this receiver joined
        self.announce: p.Announce | None = None
        self.session = 0
        self.last_error = ""  # why the last attempt to join failed
        self.sender_gone = threading.Event()
        self.sock = self._udp_socket()

    @property
    def counters(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}

    def _udp_socket(self) -> socket.socket:
        c = self.config
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:  # as root, past net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((c.group, c.port))
        iface = socket.inet_aton(c.interface or "0.0.0.0")
        sock.setsockopt(
            socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(c.group) + iface
        )
        # A kernel receive timeout (SO_RCVTIMEO) rather than Python's settimeout, which polls
        # before every recv: one system call per datagram instead of two.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 50_000))
        return sock

    # -- the session -----------------------------------------------------------------------

    def run(self, sink: ObjectSink, cancel: threading.Event | None = None) -> ReceiveStatus:
        cancel = cancel or threading.Event()
        try:
            channel = self._join(cancel)
            try:
                self._take_part(channel, sink, cancel)
            finally:
                channel.close()
        finally:
            self.sock.close()
        return self.status()

    def _take_part(self, channel: Channel, sink: ObjectSink, cancel: threading.Event) -> None:
        warnings: list[str] = []
        try:
            message = channel.recv()
            if message is None or message[0] != p.M_CATALOG:
                raise p.ProtocolError("the sender did not send its catalog")
            sizes, _, catalog = parse_catalog_message(message[1])
            self._setup(sizes)
            self.state = "joined"
            with alive(channel):
                sink.prepare(catalog, sizes)
            channel.send(p.M_READY, b"")
            threading.Thread(target=self._watch, args=(channel,), daemon=True).start()
            self.state = "receiving"
            self._receive(channel, sink, cancel)
            self.state = "finishing"
            self._report(channel)
            with alive(channel):  # fsync and --verify may take minutes
                warnings = sink.finish()
        except ClonebayError as exc:
            self.state = "failed"
            self._result(channel, False, exc.message, exc.exit_code, [])
            raise
        except Exception as exc:
            self.state = "failed"
            self._result(channel, False, f"internal error: {exc!r}", 1, [])
            raise
        self.state = "ok"
        self._result(channel, True, "", 0, warnings)

    def _join(self, cancel: threading.Event) -> Channel:
        """The back channel of the first announced session that answers authentically."""
        refused: set[int] = set()
        began = time.monotonic()  # join_timeout counts for all attempts together
        while True:
            session, port = self._find_session(cancel, refused, began)
            try:
                return self._connect(port, session)
            except p.AuthenticationError as exc:  # a replay, or not our sender: never again
                refused.add(session)
                self.sessions_refused += 1
                self.last_error = exc.message
            except (OSError, p.ProtocolError) as exc:  # try again at its next ANNOUNCE
                self.last_error = exc.message if isinstance(exc, p.ProtocolError) else str(exc)

    def _find_session(
        self, cancel: threading.Event, refused: set[int], began: float
    ) -> tuple[int, int]:
        """Wait for an authentic ANNOUNCE of a session that is not over and not ``refused``:
        (session id, port); ``join_timeout`` seconds after ``began`` it gives up."""
        buf = bytearray(2048)
        deadline = None if self.config.join_timeout is None else began
        while True:
            if cancel.is_set():
                raise CancelledError("receive cancelled while waiting for a sender")
            if deadline is not None and time.monotonic() - deadline > (
                self.config.join_timeout or 0
            ):
                last = f"; last attempt: {self.last_error}" if self.last_error else ""
                raise p.ProtocolError(
                    f"no sender announced a session on {self.config.group}:{self.config.port}"
                    f" within {self.config.join_timeout:.0f} s (is the key right? datagrams"
                    f" refused: {self.rejected}, sessions refused: {self.sessions_refused}"
                    f"{last})"
                )
            self._report(None)
            try:
                n, addr = self.sock.recvfrom_into(buf)
            except BlockingIOError:  # the receive timeout: nothing came
                continue
            d = p.parse_datagram(self.tagger, memoryview(buf)[:n])
            if d is None:
                # DATA is tagged under a session's data key, unknown before joining: not counted
                if n < HEAD.size + p.TAG_SIZE or buf[5] != p.T_DATA:
                    self.rejected += 1
                continue
            if d.kind != p.T_ANNOUNCE or d.session in refused:
                continue
            announce = p.parse_announce(d.payload)
            if announce.state == p.STATE_DONE:
                continue
            self.announce = announce
            self.sender = addr[0]
            self.join = announce.position
            return d.session, announce.port

    def _connect(self, port: int, session: int) -> Channel:
        joined = join(self.sender, port, self.config.key, session, self.config.name)
        self.session = session
        self.data_tagger = p.Tagger(joined.data_key)
        return joined.channel

    def _setup(self, sizes: list[int]) -> None:
        self.sizes = sizes
        total = 0
        for size in sizes:
            self.firsts.append(total)
            total += -(-size // p.PAYLOAD_SIZE)
        self.firsts.append(total)  # sentinel: the end
        self.end = total
        self.done_flags = bytearray(len(sizes))
        self.remaining = len(sizes)

    def _watch(self, channel: Channel) -> None:
        """Notice when the sender goes away (its end of the back channel closes)."""
        try:
            while channel.recv() is not None:
                pass
        except (OSError, ClonebayError):
            pass
        self.sender_gone.set()

    def _receive(self, channel: Channel, sink: ObjectSink, cancel: threading.Event) -> None:
        buf = bytearray(2048)
        view = memoryview(buf)
        next_nak = next_status = 0.0
        while self.remaining:
            if cancel.is_set():
                raise CancelledError("receive cancelled")
            if self.sender_gone.is_set():
                raise p.ProtocolError(
                    f"the sender ({self.sender}) closed the session before this receiver had"
                    f" everything ({self.remaining} of {len(self.sizes)} objects missing)"
                )
            if self._drain(buf, view, sink):
                # Let the next datagrams gather: one wake-up per COALESCE instead of one per
                # datagram. Only after the socket is empty, so this receiver is never behind.
                time.sleep(COALESCE)
            now = time.monotonic()
            if now >= next_nak:
                self._nak(channel, now)
                receivers = self.announce.receivers if self.announce else 1
                next_nak = now + NAK_EVERY * random.uniform(0.5, 1.5) * max(1, receivers / 16)
            if now >= next_status:
                self.overflow = self._drops()
                self._report(channel)
                next_status = now + STATUS_EVERY

    def _drain(self, buf: bytearray, view: memoryview, sink: ObjectSink) -> bool:
        """Handle what the socket holds: wait up to the receive timeout for the first
        datagram, then take the rest without waiting (at most DRAIN). Whether any came.

        This loop runs for every datagram (tens of thousands a second), so it keeps what it
        uses in local names and hands only DATA on to ``_place``."""
        recv_into, check, unpack = self.sock.recv_into, self.data_tagger.check, HEAD.unpack_from
        session, head, tag_size = self.session, HEAD.size, p.TAG_SIZE
        flags = 0
        for _ in range(DRAIN):
            try:
                n = recv_into(buf, 0, flags)
            except BlockingIOError:
                return flags != 0
            flags = socket.MSG_DONTWAIT
            end = n - tag_size
            if end < head or not check(view[:end], view[end:n]):
                self._not_data(view[:n])  # an ANNOUNCE, or refused: never placed
                continue
            magic, version, kind, dflags, dsession, seq = unpack(buf)
            if dsession != session or version != p.VERSION or magic != p.MAGIC:
                continue
            if kind == p.T_DATA:
                self._place(seq, dflags, view[head:end], sink)
        return False  # more may be waiting: no pause

    def _not_data(self, raw: memoryview) -> None:
        """A datagram that is not DATA under this session's data key: this session's ANNOUNCE
        (under the session key), another session's, or one that is refused and counted (not
        ours, another key, a replay of another session's DATA, damaged)."""
        if len(raw) < HEAD.size or raw[5] != p.T_ANNOUNCE:  # a flood costs one tag check each
            self.rejected += 1
            return
        d = p.parse_datagram(self.tagger, raw)
        if d is None or d.kind != p.T_ANNOUNCE:
            self.rejected += 1
            return
        if d.session != self.session:
            return
        self.announce = p.parse_announce(d.payload)
        if self.announce.state == p.STATE_DONE and self.remaining:
            raise p.ProtocolError("the sender ended the session before this receiver was done")

    def _place(self, seq: int, flags: int, payload: memoryview, sink: ObjectSink) -> None:
        """One authentic DATA slice into its object; a complete object goes to the sink."""
        if seq >= self.end:
            return
        if not flags and seq > self.newest:  # first pass: how many it skipped
            if self.newest >= 0:
                self.gaps += seq - self.newest - 1
            self.newest = seq
        number = bisect.bisect_right(self.firsts, seq) - 1
        part = self.partial.get(number)
        if part is None:
            if self.done_flags[number]:
                self.duplicates += 1
                return
            first = self.firsts[number]
            part = self.partial[number] = Partial(
                self.sizes[number], self.firsts[number + 1] - first, first
            )
        k = seq - part.first
        at = k * p.PAYLOAD_SIZE
        length = len(payload)
        if part.have[k] or length != min(p.PAYLOAD_SIZE, part.size - at):
            self.duplicates += 1
            return
        part.buf[at : at + length] = payload
        part.have[k] = 1
        part.missing -= 1
        self.received += 1
        self.repairs += flags & 1
        if not part.missing:
            del self.partial[number]
            self.done_flags[number] = 1
            self.remaining -= 1
            self.done_bytes += part.size
            sink.put(number, part.buf)

    def _drops(self) -> int:
        """The kernel's count of datagrams this socket dropped (its buffer was full: this
        receiver did not keep up), read with SO_MEMINFO."""
        try:
            info = self.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 64)
        except OSError:
            return self.overflow
        if len(info) < 4 * (SK_MEMINFO_DROPS + 1):
            return self.overflow
        return int(struct.unpack_from("=I", info, 4 * SK_MEMINFO_DROPS)[0])

    def _nak(self, channel: Channel, now: float) -> None:
        """Ask for every datagram the first pass has gone past and that has not arrived."""
        horizon = self.newest + 1 - REORDER
        if self.announce is not None:
            horizon = max(horizon, self.announce.position)
        while self.low < len(self.sizes) and self.done_flags[self.low]:
            self.low += 1
        gaps: list[tuple[int, int]] = []
        catchup: list[tuple[int, int]] = []
        asked: list[int] = []
        number = self.low
        while number < len(self.sizes) and self.firsts[number] < horizon:
            if len(gaps) + len(catchup) >= MAX_NAK_RANGES:
                break
            if not self.done_flags[number]:
                first, end = self.firsts[number], self.firsts[number + 1]
                upto = min(end, horizon)
                due = self.retries.due(number, now)
                start = first if due else self.retries.upto.get(number, first)
                if start < upto:  # due again, or slices lost since the last ask
                    into = catchup if end <= self.join else gaps
                    before = len(into)
                    missing_ranges(into, first, upto, self.partial.get(number), start)
                    self.retries.upto[number] = upto
                    if due and len(into) > before:
                        asked.append(number)
            number += 1
        del gaps[MAX_NAK_RANGES:], catchup[MAX_NAK_RANGES:]  # the sender refuses longer NAKs
        if not gaps and not catchup:
            return
        for kind, ranges in ((p.NAK_GAP, gaps), (p.NAK_CATCHUP, catchup)):
            if ranges:
                channel.send(p.M_NAK, p.pack_ranges(kind, ranges))
                self.naks += 1
        requested = sum(c for _, c in gaps) + sum(c for _, c in catchup)
        rate = self.announce.rate if self.announce and self.announce.rate else 10e6
        tail = self.announce is not None and self.announce.position >= self.end
        self.retries.asked(asked, now, requested, rate, backoff=not tail)

    def status(self) -> ReceiveStatus:
        return ReceiveStatus(
            self.state,
            self.done_bytes,
            sum(self.sizes),
            len(self.sizes) - self.remaining,
            len(self.sizes),
            self.sender,
            dict(self.counters),
            time.monotonic() - self.started,
        )

    def _report(self, channel: Channel | None) -> None:
        status = self.status()
        if channel is not None:
            body = {"done": status.done, "total": status.total, "counters": status.counters}
            channel.send(p.M_STATUS, json.dumps(body).encode())
        if self.status_cb is not None:
            self.status_cb(status)

    def _result(
        self, channel: Channel, ok: bool, message: str, code: int, warnings: list[str]
    ) -> None:
        body = {
            "ok": ok,
            "message": message,
            "exit_code": code,
            "warnings": warnings,
            "done": self.done_bytes,
            "counters": self.counters,
        }
        # the sender may be gone; the local result still says what happened
        with contextlib.suppress(OSError):
            channel.send(p.M_RESULT, json.dumps(body).encode())
        if self.status_cb is not None:
            self.status_cb(self.status())
