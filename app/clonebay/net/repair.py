"""A receiver's side of repairs: objects in flight, what they lack, and when to ask again.

An object whose first slice has arrived is a ``Partial``: its bytes so far and one flag per
slice. What it lacks is turned into (first sequence number, count) ranges for a NAK. ``Retries``
is the backoff (docs/multicast.md §6): what an object lacked when it was asked for is not asked
for again before its retry time, which starts at MIN_RETRY, doubles with each ask up to
MAX_RETRY, and is never shorter than the time the sender needs to send everything that NAK
asked for. Slices lost *after* that ask (the first pass was still in the object) are new and are
asked for at the next NAK: a big object is not left waiting for its retry time because of them.
"""

from __future__ import annotations

from clonebay.net.protocol import MAX_DATAGRAM

MIN_RETRY = 0.15  # seconds: a NAK interval or two, far more than a LAN's round trip
MAX_RETRY = 4.0
DRAIN_MARGIN = 1.5  # x the time the sender needs, at its announced rate, for what was asked


class Partial:
    """An object some of whose slices have arrived."""

    __slots__ = ("buf", "first", "have", "missing", "size")

    def __init__(self, size: int, count: int, first: int = 0) -> None:
        self.size = size
        self.first = first  # sequence number of the first slice
        self.buf = bytearray(size)
        self.have = bytearray(count)
        self.missing = count


def missing_ranges(
    into: list[tuple[int, int]],
    first: int,
    upto: int,
    part: Partial | None,
    start: int | None = None,
) -> None:
    """Append the ranges of [start, upto) that have not arrived (all of it without ``part``)
    of an object whose first slice is ``first``; ``start`` defaults to ``first``."""
    start = first if start is None else start
    if part is None:
        into.append((start, upto - start))
        return
    limit = upto - first
    k = part.have.find(0, start - first, limit)
    while k != -1:
        j = part.have.find(1, k, limit)
        j = limit if j == -1 else j
        into.append((first + k, j - k))
        k = part.have.find(0, j, limit)


class Retries:
    """When each object may be asked for again."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.interval: dict[int, float] = {}
        self.upto: dict[int, int] = {}  # object -> the sequence number it was asked for up to

    def due(self, number: int, now: float) -> bool:
        return self.at.get(number, 0.0) <= now

    def asked(
        self, numbers: list[int], now: float, datagrams: int, rate: float, *, backoff: bool = True
    ) -> None:
        """``numbers`` were asked for in a NAK of ``datagrams`` slices, at ``now``. Without
        ``backoff`` (the first pass is over: the sender has nothing to send but repairs) the
        retry time does not grow: under heavy loss a slice may need many rounds, and doubling
        waits would only leave an idle sender waiting for them."""
        drain = DRAIN_MARGIN * datagrams * MAX_DATAGRAM / rate
        for number in numbers:
            last = self.interval.get(number, MIN_RETRY / 2)
            interval = min(MAX_RETRY, last * 2) if backoff else MIN_RETRY
            self.interval[number] = interval
            self.at[number] = now + max(interval, drain)
