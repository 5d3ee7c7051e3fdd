"""Multicast jobs: send an image to many machines at once, and receive one onto a target.

``send`` offers an image's frames (or a live disk's chunks: multicast/disk_source.py) to a net/
session (multicast/catalog.py says what is sent); ``receive`` joins a session and feeds the frames
as they arrive, in any order, to the one target path (multicast/receive_sink.py), which restores
them exactly as a restore of the same image would: same Plan, guards, safety order, verify,
fixups and count check.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from clonebay.engine.multicast.catalog import ImageObjects
from clonebay.engine.multicast.disk_source import DiskObjects
from clonebay.engine.multicast.receive_sink import MulticastRestore
from clonebay.engine.restore.placements import RestoreOptions
from clonebay.errors import UsageError
from clonebay.imaging.manifest import Manifest
from clonebay.imaging.reader import ImageReader
from clonebay.imaging.stream_convert import is_stream_file
from clonebay.model import Progress
from clonebay.net.receiver import ReceiveConfig, Receiver, ReceiveStatus
from clonebay.net.sender import SendConfig, Sender, SessionStatus

__all__ = ["MulticastRestore", "ReceiveConfig", "SendConfig", "receive", "send"]


def send(
    source: str,
    config: SendConfig,
    *,
    status: Callable[[SessionStatus], None] | None = None,
    start: threading.Event | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> SessionStatus:
    """Send ``source``, an image directory or a disk (read live: multicast/disk_source.py), to
    every receiver that joins; returns the session's final status with every receiver's
    outcome. ``progress`` reports the disk's mapping pass."""
    if os.path.isdir(source):
        with ImageReader(source) as reader:
            return Sender(config, ImageObjects(reader), status).run(start, cancel)
    if os.path.isfile(source) and is_stream_file(source):
        raise UsageError(
            f"{source} is an image stream: convert it into an image directory first"
            " (clonebay convert), or send it over TCP with --to"
        )
    disk = DiskObjects(source, progress)
    try:
        return Sender(config, disk, status).run(start, cancel)
    finally:
        disk.close()


def receive(
    target: str,
    config: ReceiveConfig,
    options: RestoreOptions | None = None,
    *,
    progress: Callable[[Progress], None] | None = None,
    status: Callable[[ReceiveStatus], None] | None = None,
    cancel: threading.Event | None = None,
    on_manifest: Callable[[Manifest], None] | None = None,
) -> tuple[list[str], ReceiveStatus]:
    """Join a session and restore what it carries onto ``target`` (a disk or a disk image
    file, created when absent); returns the restore's warnings and the receiver's counters.
    ``on_manifest`` gets the session's manifest once it is known (the post-copy pass compares
    the source's partitions with the target's)."""
    sink = MulticastRestore(target, options or RestoreOptions(), progress, cancel, on_manifest)

    def on_status(s: ReceiveStatus) -> None:
        sink.report(s)
        if status is not None:
            status(s)

    try:
        final = Receiver(config, on_status).run(sink, cancel)
    finally:
        sink.close()
    return sink.warnings, final
