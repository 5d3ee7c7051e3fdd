"""Progress for the command line: JSON lines with ``--json``, a one-line bar on a terminal,
nothing otherwise (a pipe or a log file gets only the result)."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from clonebay.model import Progress
from clonebay.units import human_rate, human_size


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressView:
    """Callable that shows Progress events in the form that suits where stderr goes."""

    def __init__(self, as_json: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.as_json = as_json
        self.bar = not as_json and self.stream.isatty()
        self.last: Progress | None = None
        self.started = time.monotonic()

    def __call__(self, event: Progress) -> None:
        self.last = event
        if self.as_json:
            line = {
                "event": "progress",
                "region": event.region,
                "done": event.done,
                "total": event.total,
                "bytes_per_second": round(event.bytes_per_second),
                "eta_seconds": None if event.eta_seconds is None else round(event.eta_seconds, 1),
                "bottleneck": event.bottleneck,
            }
            print(json.dumps(line), file=self.stream, flush=True)
        elif self.bar:
            frac = event.done / event.total if event.total else 1.0
            filled = int(frac * 30)
            text = (
                f"\r[{'#' * filled}{'.' * (30 - filled)}] {frac * 100:5.1f}%"
                f" {human_size(event.done)}/{human_size(event.total)}"
                f" {human_rate(event.bytes_per_second)} ETA {_eta(event.eta_seconds)}"
                f" ({event.region}, slowest: {event.bottleneck})"
            )
            self.stream.write(text.ljust(110))
            self.stream.flush()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def close(self) -> None:
        if self.bar and self.last is not None:
            self.stream.write("\n")
            self.stream.flush()
