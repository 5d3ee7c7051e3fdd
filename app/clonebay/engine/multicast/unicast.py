"""The unicast fallback: one image (or disk) to one receiver over TCP, in the stream form.

For networks that block multicast: ``clonebay receive --listen`` waits for a sender, and
``clonebay send SOURCE --to HOST`` connects and writes SOURCE as an image stream (docs/format.md
§10): an image directory is converted on the fly, a stream file is sent as it is, a disk is
saved on the fly (only used blocks, LZ4). The receiver restores the stream as it arrives with
the stream restore (engine/restore/stream.py: same plan, guards, safety order and fixups as every
restore) and sends its outcome back. net/tcp.py authenticates every chunk with the session key.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from collections.abc import Callable
from typing import Any

from clonebay.engine.convert import convert
from clonebay.engine.restore.directory import RestoreOptions
from clonebay.engine.restore.stream import restore_stream
from clonebay.engine.save import SaveOptions, save
from clonebay.errors import ClonebayError
from clonebay.imaging.stream_convert import is_stream_file
from clonebay.model import Progress
from clonebay.net import tcp


def send_to(
    source: str,
    host: str,
    key: bytes,
    *,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Send ``source`` (image directory, stream file or disk) to the receiver listening at
    ``host`` ("name" or "name:port"); returns the receiver's result."""
    address, port = tcp.host_port(host)
    channel = tcp.connect(key, address, port)
    try:
        raw = tcp.ChannelWriter(channel)
        out = io.BufferedWriter(raw, tcp.CHUNK)
        if os.path.isdir(source):
            convert(source, out, progress=progress, cancel=cancel)
        elif os.path.isfile(source) and is_stream_file(source):
            with open(source, "rb") as f:
                shutil.copyfileobj(f, out, tcp.CHUNK)
        else:
            save(source, out, SaveOptions(), progress=progress, cancel=cancel)
        out.flush()
        raw.finish()
        result = tcp.wait_result(channel)
        result["bytes_sent"] = raw.sent
        return result
    finally:
        channel.close()


def receive_from_sender(
    target: str,
    key: bytes,
    port: int = tcp.DEFAULT_TCP_PORT,
    options: RestoreOptions | None = None,
    *,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    listening: Callable[[int], None] | None = None,
) -> list[str]:
    """Wait for a sender on TCP ``port`` and restore its stream onto ``target``."""
    channel = tcp.listen(key, port, listening)
    try:
        reader = io.BufferedReader(tcp.ChannelReader(channel), tcp.CHUNK)
        try:
            warnings = restore_stream(
                reader, target, options, name="tcp", progress=progress, cancel=cancel
            )
        except ClonebayError as exc:
            result = {"ok": False, "message": exc.message, "exit_code": exc.exit_code}
            tcp.send_result(channel, result)
            raise
        tcp.send_result(channel, {"ok": True, "warnings": warnings})
        return warnings
    finally:
        channel.close()
