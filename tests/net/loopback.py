"""A multicast session inside the test process, on the loopback interface: the real net.Sender
with the engine's image objects in one thread, real engine receivers (onto target files) in
others, and what a hostile host on the LAN would do: record the group's datagrams and the TCP
segments of a back channel (an AF_PACKET socket on ``lo``, as tcpdump would), and send them
again later.

Every session gets a group, a UDP port and a TCP port of its own, so parallel runs do not meet.
"""

from __future__ import annotations

import contextlib
import ctypes
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clonebay.engine.multicast import jobs
from clonebay.engine.multicast.catalog import ImageObjects
from clonebay.imaging.reader import ImageReader
from clonebay.net import protocol as p
from clonebay.net.receiver import ReceiveConfig
from clonebay.net.sender import SendConfig, Sender, SessionStatus

LOOPBACK = "127.0.0.1"
KEY = p.derive_key("loopback-test-key")
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4  # <linux/if_packet.h>: the copy of a packet as it leaves; lo shows both
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>
SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>: a classic BPF program on the socket


def tcp_port_filter(port: int) -> bytes:
    """A classic BPF program (struct sock_filter: u16 code, u8 jt, u8 jf, u32 k) that accepts
    IPv4 TCP segments from or to ``port``; on an AF_PACKET SOCK_DGRAM socket it sees the
    packet from its IP header."""
    program = [
        (0x30, 0, 0, 9),  # ldb [9]: the IP protocol
        (0x15, 0, 6, socket.IPPROTO_TCP),  # not TCP: drop
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf): X = the IP header's length
        (0x48, 0, 0, 0),  # ldh [x+0]: source port
        (0x15, 2, 0, port),
        (0x48, 0, 0, 2),  # ldh [x+2]: destination port
        (0x15, 0, 1, port),
        (0x06, 0, 0, 0x40000),  # accept (up to 256 KiB of it)
        (0x06, 0, 0, 0),  # drop
    ]
    return b"".join(struct.pack("HBBI", *insn) for insn in program)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Place:
    """Where a session happens: group, UDP port, the sender's back-channel port."""

    group: str = field(default_factory=lambda: f"239.255.{secrets.randbelow(250) + 1}.77")
    port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    control_port: int = field(default_factory=free_port)

    def send_config(self, **extra: Any) -> SendConfig:
        return SendConfig(
            key=KEY,
            group=self.group,
            port=self.port,
            control_port=self.control_port,
            interface=LOOPBACK,
            rate=30e6,
            **extra,
        )

    def receive_config(self, name: str, join_timeout: float | None = 60) -> ReceiveConfig:
        return ReceiveConfig(
            key=KEY,
            group=self.group,
            port=self.port,
            interface=LOOPBACK,
            name=name,
            join_timeout=join_timeout,
        )


class Worker:
    """A function in a thread; ``result`` re-raises what it raised."""

    def __init__(self, name: str, target: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.value = target()
            except BaseException as exc:  # handed to the test by result()
                self.error = exc

        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()

    def result(self, timeout: float = 120) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"{self.thread.name} still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.value


@contextlib.contextmanager
def sending(
    image: Path, place: Place, **extra: Any
) -> Iterator[tuple[Sender, Worker, threading.Event]]:
    """A Sender for ``image`` running in a thread: (the sender, its worker, cancel)."""
    cancel = threading.Event()
    with ImageReader(str(image)) as reader:
        sender = Sender(place.send_config(**extra), ImageObjects(reader))
        worker = Worker("sender", lambda: sender.run(None, cancel))
        try:
            yield sender, worker, cancel
        finally:
            cancel.set()
            worker.thread.join(30)


def receiving(target: Path, place: Place, name: str, join_timeout: float | None = 60) -> Worker:
    """An engine receiver writing ``target`` in a thread; its result: (warnings, status)."""
    config = place.receive_config(name, join_timeout)
    return Worker(name, lambda: jobs.receive(str(target), config))


def final(worker: Worker) -> SessionStatus:
    status: SessionStatus = worker.result()
    return status


class DatagramRecorder:
    """Every datagram sent to the group, as a listener on the LAN gets them."""

    def __init__(self, place: Place) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)  # lose nothing
        sock.bind((place.group, place.port))
        mreq = socket.inet_aton(place.group) + socket.inet_aton(LOOPBACK)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.settimeout(0.1)
        self.sock = sock
        self.datagrams: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                self.datagrams.append(self.sock.recv(65536))

    def close(self) -> list[bytes]:
        self.stop.set()
        self.thread.join()
        self.sock.close()
        return self.datagrams


class TcpRecorder:
    """The TCP payload of connections to ``port`` on lo, per direction, from an AF_PACKET
    socket: what a host that sees the traffic records. Segments are put back in order by their
    sequence numbers (a retransmission is kept once)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        # Only TCP to or from the port reaches this socket: the session's DATA (tens of MB/s on
        # lo) would otherwise crowd out the segments to record.
        self.filter = ctypes.create_string_buffer(tcp_port_filter(port))
        fprog = struct.pack("HL", len(self.filter.raw) // 8, ctypes.addressof(self.filter))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.1)
        # (client port, to the server?) -> {sequence number: payload}
        self.segments: dict[tuple[int, bool], dict[int, bytes]] = {}
        self.isn: dict[tuple[int, bool], int] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                packet, addr = self.sock.recvfrom(1 << 17)
            except TimeoutError:
                continue
            if addr[2] == PACKET_OUTGOING:
                continue
            self._take(packet)

    def _take(self, packet: bytes) -> None:
        ihl = (packet[0] & 0x0F) * 4
        if packet[9] != socket.IPPROTO_TCP:
            return
        total = struct.unpack_from("!H", packet, 2)[0] or len(packet)
        src, dst, seq = struct.unpack_from("!HHI", packet, ihl)
        if self.port not in (src, dst):
            return
        flags = packet[ihl + 13]
        offset = (packet[ihl + 12] >> 4) * 4
        payload = packet[ihl + offset : total]
        key = (src, True) if dst == self.port else (dst, False)
        with self.lock:
            if flags & 0x02:  # SYN: the stream's first byte is the next sequence number
                self.isn[key] = seq + 1
            if payload:
                self.segments.setdefault(key, {}).setdefault(seq, payload)

    def connections(self) -> list[int]:
        """Client ports, in the order their connections began."""
        with self.lock:
            return [port for port, to_server in self.isn if to_server]

    def stream(self, client: int, to_server: bool) -> bytes:
        """The bytes of one direction of one connection, as far as they are contiguous."""
        with self.lock:
            start = self.isn[(client, to_server)]
            pieces = dict(self.segments.get((client, to_server), {}))
        out = bytearray()
        at = start
        while at in pieces:
            out += pieces[at]
            at = (at + len(pieces[at])) & 0xFFFFFFFF
        return bytes(out)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def wait_until(what: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``what`` until it holds (True) or ``timeout`` passed (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(step)
    return what()
