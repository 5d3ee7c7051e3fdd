"""The back channel's idle timeout against a well-behaved receiver, on loopback: a receiver whose
plan and finish take longer than the sender's idle timeout is kept (it sends ALIVE meanwhile)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from clonebay.net import protocol as p
from clonebay.net.receiver import Receiver
from clonebay.net.sender import Sender
from tests.net.loopback import Place, Worker


class Objects:
    """Three objects of distinct bytes (the last one short)."""

    catalog = b"{}"

    def __init__(self) -> None:
        self.bodies = [bytes([n]) * (50 * p.PAYLOAD_SIZE - 7 * n) for n in range(1, 4)]

    @property
    def sizes(self) -> Sequence[int]:
        return [len(b) for b in self.bodies]

    def body(self, number: int) -> bytes:
        return self.bodies[number]


class SlowSink:
    """A sink whose plan and finish take ``seconds`` each (as the engine's can: zeroing runs of
    a large disk, fsync and --verify)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.objects: dict[int, bytes] = {}

    def prepare(self, catalog: bytes, sizes: Sequence[int]) -> None:
        time.sleep(self.seconds)  # the slow plan under test, not a wait for something

    def put(self, number: int, body: bytearray) -> None:
        self.objects[number] = bytes(body)

    def finish(self) -> list[str]:
        time.sleep(self.seconds)  # the slow fsync and verify under test
        return []


def test_receiver_planning_and_finishing_longer_than_the_idle_timeout_is_kept() -> None:
    place = Place()
    source = Objects()
    sender = Sender(place.send_config(idle_timeout=1.5), source)
    cancel = threading.Event()
    sending = Worker("sender", lambda: sender.run(None, cancel))
    try:
        sink = SlowSink(3.0)
        receiver = Receiver(place.receive_config("slow", join_timeout=30))
        receiving = Worker("receiver", lambda: receiver.run(sink))
        receiving.result(60)
        status = sending.result(60)
    finally:
        cancel.set()
    assert [(r.name, r.state) for r in status.receivers] == [("slow", "ok")]
    assert [sink.objects[n] for n in range(3)] == source.bodies
