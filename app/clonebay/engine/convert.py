"""The convert job: an image stream into an image directory, or a directory into a stream.

Frames are copied as they are, never decoded into new ones (docs/format.md §10), so converting
is as fast as reading and writing the bytes, and directory -> stream -> directory gives the same
packs, indexes and manifest. A stream may come from a file or stdin; it is checked record by
record, and one that is damaged or incomplete leaves an incomplete directory image. A stream
file is created new (``overwrite`` replaces an existing one) and removed again when the
conversion fails, so a stream file that exists is complete.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from clonebay.errors import CancelledError, DeviceError, SafetyError, UsageError
from clonebay.imaging.manifest import Manifest
from clonebay.imaging.stream_convert import (
    directory_to_stream,
    is_stream_file,
    stream_to_directory,
)
from clonebay.model import Progress

__all__ = ["convert"]


def convert(
    source: str | IO[bytes],
    target: str | IO[bytes],
    *,
    overwrite: bool = False,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> Manifest:
    """Convert ``source`` (a stream file, a binary file object, or an image directory) into the
    other form at ``target`` (a directory for a stream; a file or file object for a directory).
    """
    advance = _Meter(progress, cancel or threading.Event())
    if isinstance(source, str) and Path(source).is_dir():
        if not isinstance(target, str):
            return directory_to_stream(source, target, name="stdout", progress=advance)
        return _to_stream_file(source, target, overwrite, advance)
    if not isinstance(target, str):
        raise UsageError("a stream converts into an image directory, not into another stream")
    if not isinstance(source, str):
        return stream_to_directory(source, target, overwrite=overwrite, progress=advance)
    if not is_stream_file(source):
        what = "does not exist" if not os.path.exists(source) else "is not an image stream"
        raise UsageError(f"{source} {what}: give an image directory or an image stream file")
    with open(source, "rb") as src:
        return stream_to_directory(src, target, name=source, overwrite=overwrite, progress=advance)


def _to_stream_file(source: str, target: str, overwrite: bool, advance: _Meter) -> Manifest:
    if os.path.isdir(target):
        raise UsageError(f"{target} is a directory; a stream is written to a file (or -)")
    if os.path.exists(target) and not overwrite:
        raise SafetyError(f"{target} already exists; pass --overwrite to replace it")
    try:
        out = open(target, "wb")  # noqa: SIM115 - closed below, removed on failure
    except OSError as exc:
        raise DeviceError(f"cannot create {target}: {exc.strerror}") from exc
    try:
        with out:
            manifest = directory_to_stream(source, out, name=target, progress=advance)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise
    return manifest


class _Meter:
    """(region, done, total) from the converter -> Progress events every half second; cancel."""

    def __init__(self, report: Callable[[Progress], None] | None, cancel: threading.Event) -> None:
        self.report = report
        self.cancel = cancel
        self.started = self.last = time.monotonic()

    def __call__(self, region: str, done: int, total: int) -> None:
        if self.cancel.is_set():
            raise CancelledError("conversion cancelled")
        now = time.monotonic()
        if self.report is None or (now - self.last < 0.5 and done < total):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-6)
        eta = (total - done) / rate if rate and total > done else None
        self.report(Progress(region, done, max(total, done), rate, eta, "convert"))
