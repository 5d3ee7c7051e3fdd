"""Multicast and TCP jobs: what a sender offers (an image's frames or a live disk's chunks, as a
catalog of objects) and the receiver's feed into the one target path (engine/target/).

``send``/``receive`` run a multicast session (multicast/jobs.py); the TCP fallback is in
multicast/unicast.py."""

from clonebay.engine.multicast.jobs import (
    MulticastRestore,
    ReceiveConfig,
    SendConfig,
    receive,
    send,
)

__all__ = ["MulticastRestore", "ReceiveConfig", "SendConfig", "receive", "send"]
