"""Rate: a pacer that spreads datagrams evenly in time, and the controller that sets its rate.

Pacing matters more than the rate itself: an unpaced burst of 1,000 datagrams lost 38 % at a
receiver with default socket buffers on our test VM, while the same count spread over time
arrives whole. The pacer keeps a schedule (bytes / rate per datagram) and sleeps only when it is
more than ``SLACK`` ahead, so bursts stay below a couple of milliseconds of data.

The controller is additive-increase / multiplicative-decrease on what receivers report: when at
least a quarter of the active receivers saw their socket buffer overflow (the kernel's own drop
count, SO_MEMINFO: the receiver could not keep up) or lost more than ``HEAVY_LOSS`` of an
interval's datagrams, the rate drops by 30 %; otherwise it climbs back towards the cap by 5 % of
the cap per interval. Light random loss (a bad cable, 1-5 %) is left to repairs and does not
slow everyone down, and heavy loss stops counting once slowing down is seen not to lower it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

SLACK = 0.002  # seconds the schedule may run ahead before the pacer sleeps
CATCH_UP = 0.03  # seconds of lost schedule made up after a stall (a late wake-up, a busy CPU)
HEAVY_LOSS = 0.20  # fraction of an interval's datagrams lost that counts as congestion
DECREASE = 0.7
INCREASE = 0.05  # of the cap, per interval without congestion
TRIAL = 2  # intervals the rate is held after a decrease for loss, before judging it
STUBBORN = 0.8  # loss at least this share of what it was: the decrease did not help


class Pacer:
    """Call ``wait(n)`` after sending n bytes; it sleeps when the sender is ahead of the rate."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.due = time.monotonic()

    def wait(self, nbytes: int) -> None:
        now = time.monotonic()
        # After a stall, make up at most CATCH_UP seconds in one burst (30 ms at 40 MB/s is
        # 1.2 MB, well inside a receiver's 16 MiB socket buffer); after idling, nothing.
        self.due = max(self.due, now - CATCH_UP)
        self.due += nbytes / self.rate
        ahead = self.due - now
        if ahead > SLACK:
            time.sleep(ahead)


class RateControl:
    """AIMD on the share of receivers that report congestion in each interval.

    A receiver whose socket overflowed is overwhelmed, and slowing down always helps it. Heavy
    loss (more than ``HEAVY_LOSS`` of an interval's datagrams) may be congestion (a queue that
    overflows at this rate) or a bad network that loses as much at any rate. So when the rate is
    lowered for loss, the controller holds it for ``TRIAL`` intervals (the receivers' reports lag
    by one) and then looks: if the loss did not fall below ``STUBBORN`` x what it was, slowing
    down did not help, heavy loss no longer counts as congestion in this session, and the rate
    climbs back: repairs deal with such loss, and a slower sender would only take longer.
    """

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.floor = max(cap / 64, 256_000.0)
        self.rate = cap
        self.decreases = 0
        self.loss_counts = True  # until slowing down has been seen not to lower the loss
        self.trial: tuple[float, int] | None = None  # (loss when lowered for it, intervals left)

    def update(self, deltas: Sequence[tuple[int, int, int]]) -> float:
        """The new rate, from each running receiver's (received, lost, overflow) counts since
        the last update."""
        if not deltas:
            return self.rate
        overflowed = sum(1 for d in deltas if d[2] > 0)
        losses = [loss_fraction(d[0], d[1]) for d in deltas if not d[2]]
        heavy = [x for x in losses if x > HEAVY_LOSS]
        judging = False
        if self.trial is not None:
            before, left = self.trial
            self.trial = (before, left - 1) if left > 1 else None
            if self.trial is None and heavy and statistics.median(heavy) >= before * STUBBORN:
                self.loss_counts = False  # slower did not mean less loss: not congestion
            judging = self.trial is not None
        hot = overflowed + (len(heavy) if self.loss_counts and not judging else 0)
        if hot and hot * 4 >= len(deltas):
            self.rate = max(self.floor, self.rate * DECREASE)
            self.decreases += 1
            if overflowed * 4 < len(deltas):  # lowered for loss: see later what it did
                self.trial = (statistics.median(heavy), TRIAL)
        elif not judging:
            self.rate = min(self.cap, self.rate + self.cap * INCREASE)
        return self.rate


def loss_fraction(received: int, lost: int) -> float:
    seen = received + lost
    return lost / seen if seen > 0 else 0.0
