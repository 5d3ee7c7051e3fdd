"""The TUI on the guest's serial console, read through a terminal emulator (pyte) as a
technician's terminal would show it, and driven one key at a time (Textual reads a burst of
bytes as one escape sequence)."""

from __future__ import annotations

import time
from typing import Any

from tests.iso.qemu import Guest


class SerialScreen:
    def __init__(self, guest: Guest, pyte: Any, cols: int = 100, rows: int = 30) -> None:
        self.guest = guest
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.fed = len(guest.output)
        self.start = self.fed

    def text(self) -> str:
        self.stream.feed(bytes(self.guest.output[self.fed :]))
        self.fed = len(self.guest.output)
        return "\n".join(self.screen.display)

    def wait_for(self, *words: str, timeout: float = 300) -> str:
        """Until every one of ``words`` is on the screen; the screen."""
        deadline = time.monotonic() + timeout
        text = self.text()
        while not all(w in text for w in words):
            if time.monotonic() > deadline:
                raise AssertionError(f"not on the screen after {timeout} s: {words}\n{text}")
            time.sleep(1)
            text = self.text()
        return text

    def key(self, key: str, pause: float = 1.5) -> None:
        self.guest.send(key)
        time.sleep(pause)
