"""A real terminal for TUI tests: a tmux session of a fixed size running one command; keys go in
with send-keys and the screen comes back with capture-pane. Only sessions opened here are killed."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

DEADLINE = 60.0


class Terminal:
    """One tmux session running a command at 120x40."""

    def __init__(self, name: str, argv: list[str], cwd: Path) -> None:
        self.name = name
        # COLUMNS/LINES left in the environment by earlier tests would override the pane size
        command = f"cd {shlex.quote(str(cwd))} && exec env -u COLUMNS -u LINES {shlex.join(argv)}"
        self.tmux("new-session", "-d", "-s", name, "-x", "120", "-y", "40", command)
        # the size must not follow other tmux clients or the server's default-size
        self.tmux("set-option", "-t", name, "window-size", "manual")
        self.tmux("resize-window", "-t", name, "-x", "120", "-y", "40")

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", *args], capture_output=True, text=True, check=True)
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def wait_for(self, text: str) -> str:
        """The screen once it shows ``text`` (polled; fails after DEADLINE seconds)."""
        end = time.monotonic() + DEADLINE
        while True:
            shown = self.screen()
            if text in shown:
                return shown
            if time.monotonic() > end:
                raise AssertionError(f"{text!r} never appeared; the screen shows:\n{shown}")
            time.sleep(0.1)  # polling a terminal that another process draws

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name], check=False).returncode == 0

    def close(self) -> None:
        if self.alive():
            self.tmux("kill-session", "-t", self.name)


needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
