"""The sender's view of its receivers: one back-channel connection each, served by a thread.

A receiver connects (greetings, then HELLO), gets WELCOME and the catalog, says READY once its
target is accepted, then sends STATUS (progress and loss counters) and NAK (missing datagrams)
while data flows, and one RESULT at the end. A connection that drops before RESULT marks the
receiver *lost*; the others carry on. Everything a connection thread learns goes into ``Peers``
under one lock.

Hostile peers (docs/multicast.md §7): the sender (sender.py) serves at most a fixed number of
connections at once; one that has not sent an authentic HELLO within the handshake timeout, or
that stays silent for the idle timeout afterwards, is closed. Nothing past a 4 KiB HELLO is read
before its tag passed, and afterwards each message type has its own size limit (``LIMITS``). A
NAK that asks for slices outside the catalog is refused and counted, never repaired.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clonebay.net import protocol as p
from clonebay.net.control import Channel, open_channel
from clonebay.net.ranges import RangeSet

OUTCOMES = ("ok", "failed", "lost")
# What a receiver may send, and the largest body of each (control.Channel refuses the rest).
LIMITS = {
    p.M_HELLO: p.PREAUTH_LIMIT,
    p.M_READY: 0,
    p.M_ALIVE: 0,
    p.M_STATUS: p.MAX_REPORT,
    p.M_NAK: p.MAX_NAK,
    p.M_RESULT: p.MAX_REPORT,
}


@dataclass
class ReceiverState:
    """What the sender knows of one receiver."""

    number: int
    address: str
    name: str = ""
    state: str = "joined"  # joined, ready, running, ok, failed, lost
    ready: bool = False  # its target passed the checks: it counts for the start
    done: int = 0
    total: int = 0
    message: str = ""
    exit_code: int = 0
    joined_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    counters: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    last: tuple[int, int, int] = (0, 0, 0)  # received, lost, overflow at the last rate update

    @property
    def finished(self) -> bool:
        return self.state in OUTCOMES

    def as_dict(self) -> dict[str, Any]:
        seconds = (self.finished_at or time.monotonic()) - self.joined_at
        return {
            "receiver": self.number,
            "address": self.address,
            "name": self.name,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "message": self.message,
            "exit_code": self.exit_code,
            "seconds": round(seconds, 1),
            "counters": dict(self.counters),
            "warnings": list(self.warnings),
        }


class Peers:
    """Receivers and the repair queues their NAKs fill (``urgent`` before new data,
    ``catchup`` after it)."""

    def __init__(
        self,
        key: bytes,
        session: int,
        catalog_message: bytes,
        data_nonce: bytes,
        *,
        datagrams: int,
        timeouts: tuple[float, float] = (5.0, 30.0),
    ) -> None:
        self.key = key
        self.session = session
        self.catalog_message = catalog_message
        self.welcome = p.WELCOME.pack(data_nonce, len(catalog_message))
        self.datagrams = datagrams  # NAKs may ask for [0, datagrams) only
        self.handshake_timeout, self.idle_timeout = timeouts
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.receivers: list[ReceiverState] = []
        self.channels: list[Channel] = []
        self.urgent = RangeSet()
        self.catchup = RangeSet()
        self.naks = 0
        self.naks_refused = 0  # NAKs for slices outside the catalog: never repaired
        self.rejected = 0  # connections that failed authentication or timed out before it
        self.active = 0  # connections being served (sender.py caps it)
        self.closing = False

    def snapshot(self) -> list[ReceiverState]:
        with self.lock:
            return list(self.receivers)

    def ready(self) -> int:
        """Receivers ready to take data (and not finished)."""
        with self.lock:
            return sum(1 for r in self.receivers if r.ready and not r.finished)

    def joined(self) -> int:
        with self.lock:
            return len(self.receivers)

    def all_finished(self) -> bool:
        with self.lock:
            return bool(self.receivers) and all(r.finished for r in self.receivers)

    def next_repair(self, first_pass_done: bool) -> tuple[int, bool] | None:
        """The next sequence number to repeat: lost datagrams first; those a late joiner
        missed only once the first pass is over (so late joiners never slow the others)."""
        with self.lock:
            if self.urgent:
                return self.urgent.pop_first(), True
            if first_pass_done and self.catchup:
                return self.catchup.pop_first(), True
        return None

    def serve(self, sock: socket.socket, address: str, on_change: Callable[[], None]) -> None:
        """Run one receiver's connection to its end (in its own thread)."""
        state = ReceiverState(0, address)
        registered = False
        channel: Channel | None = None
        try:
            sock.settimeout(self.handshake_timeout)
            channel = open_channel(
                sock,
                self.key,
                self.session,
                p.FROM_SENDER,
                limits=LIMITS,
                timeout=self.handshake_timeout,
            )
            hello = channel.recv()
            if hello is None or hello[0] != p.M_HELLO:
                raise p.ProtocolError("expected HELLO")
            channel.deadline = None  # authentic: from now on the idle timeout applies
            sock.settimeout(self.idle_timeout)
            state.name = str(json.loads(hello[1]).get("name", ""))[:64]
            with self.lock:
                state.number = len(self.receivers) + 1
                self.receivers.append(state)
                self.channels.append(channel)
                registered = True
            channel.send(p.M_WELCOME, self.welcome)
            channel.send(p.M_CATALOG, self.catalog_message)
            on_change()
            while (message := channel.recv()) is not None:
                self._handle(state, *message)
                if state.finished:
                    break
        except TimeoutError:
            if not registered:
                with self.lock:
                    self.rejected += 1
            elif not state.finished:
                state.message = f"the receiver was silent for {self.idle_timeout:.0f} s"
        except (OSError, ValueError, p.ProtocolError) as exc:
            if not registered:
                with self.lock:
                    self.rejected += 1
            elif not state.finished:
                state.message = str(exc)
        finally:
            if registered and not state.finished:
                state.state = "lost"
                state.message = state.message or "the connection closed before a result"
                state.finished_at = time.monotonic()
            if channel is not None:
                channel.close()
            else:
                sock.close()
            with self.lock:
                self.active -= 1
            self.wake.set()
            on_change()

    def _handle(self, state: ReceiverState, kind: int, body: bytes) -> None:
        if kind == p.M_ALIVE:
            pass  # still planning; only resets the idle timeout
        elif kind == p.M_READY:
            state.state, state.ready = "ready", True
        elif kind == p.M_STATUS:
            info = json.loads(body)
            state.done, state.total = int(info["done"]), int(info["total"])
            state.counters = {k: int(v) for k, v in info.get("counters", {}).items()}
            if state.state in ("joined", "ready"):
                state.state = "running"
        elif kind == p.M_NAK:
            try:
                nak_kind, ranges = p.parse_ranges(body)
                if not p.ranges_within(nak_kind, ranges, self.datagrams):
                    raise p.ProtocolError("a NAK for slices outside the catalog")
            except p.ProtocolError:
                with self.lock:
                    self.naks_refused += 1
                return
            with self.lock:
                queue = self.catchup if nak_kind == p.NAK_CATCHUP else self.urgent
                for first, count in ranges:
                    queue.add(first, count)
                self.naks += 1
            self.wake.set()
        elif kind == p.M_RESULT:
            info = json.loads(body)
            state.state = "ok" if info.get("ok") else "failed"
            state.message = str(info.get("message", ""))
            state.exit_code = int(info.get("exit_code", 0))
            state.warnings = [str(w) for w in info.get("warnings", [])]
            state.counters = {k: int(v) for k, v in info.get("counters", {}).items()}
            state.done = int(info.get("done", state.done))
            state.finished_at = time.monotonic()
        else:
            raise p.ProtocolError(f"unexpected control message type {kind}")


def catalog_message(catalog: bytes, sizes: Sequence[int], datagrams: int) -> bytes:
    """The body of the CATALOG message: counts, every object's size, the engine's catalog."""
    head = p.CATALOG_HEAD.pack(len(sizes), p.PAYLOAD_SIZE, datagrams)
    return head + struct.pack(f"<{len(sizes)}I", *sizes) + catalog


def parse_catalog_message(body: bytes) -> tuple[list[int], int, bytes]:
    """(object sizes, datagrams in all, the engine's catalog) from a CATALOG body."""
    if len(body) < p.CATALOG_HEAD.size:
        raise p.ProtocolError("CATALOG message too short")
    objects, payload, datagrams = p.CATALOG_HEAD.unpack_from(body)
    if payload != p.PAYLOAD_SIZE:
        raise p.ProtocolError(f"the sender cuts objects into {payload}-byte slices, not ours")
    end = p.CATALOG_HEAD.size + 4 * objects
    if len(body) < end:
        raise p.ProtocolError("CATALOG message shorter than its object table")
    sizes = list(struct.unpack_from(f"<{objects}I", body, p.CATALOG_HEAD.size))
    if sum(-(-s // payload) for s in sizes) != datagrams or min(sizes, default=1) <= 0:
        raise p.ProtocolError("CATALOG object sizes do not add up to its datagram count")
    return sizes, datagrams, body[end:]
