"""A real terminal for TUI tests: a tmux session of a fixed size running one command; keys go in
with send-keys and the screen comes back with capture-pane. Only sessions opened here are killed;
a test that kills the whole tmux server gives its Terminal a server of its own (``socket``).

``status``: the command runs under a shell that ignores SIGHUP and writes the command's exit
status into that file, so the command gets no SIGHUP when the terminal goes (as under nohup, or
behind a program that does not pass the hangup on): it only sees its tty hang up."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

DEADLINE = 60.0


class Terminal:
    """One tmux session running a command at ``width``x40 (120 columns unless said)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        cwd: Path,
        *,
        socket: str | None = None,
        status: Path | None = None,
        width: int = 120,
    ) -> None:
        self.name = name
        self.socket = socket
        # COLUMNS/LINES left in the environment by earlier tests would override the pane size
        run = f"env -u COLUMNS -u LINES {shlex.join(argv)}"
        command = f"cd {shlex.quote(str(cwd))} && exec {run}"
        if status is not None:
            record = f"echo $? > {shlex.quote(str(status))}"
            command = f"trap '' HUP; cd {shlex.quote(str(cwd))} && {run}; {record}"
        self.tmux("new-session", "-d", "-s", name, "-x", str(width), "-y", "40", command)
        # the size must not follow other tmux clients or the server's default-size
        self.tmux("set-option", "-t", name, "window-size", "manual")
        self.tmux("resize-window", "-t", name, "-x", str(width), "-y", "40")

    def tmux(self, *args: str) -> str:
        server = ["-L", self.socket] if self.socket else []
        done = subprocess.run(["tmux", *server, *args], capture_output=True, text=True, check=True)
        return done.stdout

    def pane_pid(self) -> int:
        """The pid of the command in the pane (of the shell, with ``status``)."""
        return int(self.tmux("display-message", "-p", "-t", self.name, "#{pane_pid}"))

    def kill_server(self) -> None:
        """The whole tmux server goes, as when tmux is killed: only a server of our own."""
        assert self.socket, "only a tmux server this test started may be killed"
        self.tmux("kill-server")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def wait_for(self, *texts: str) -> str:
        """The screen once it shows every one of ``texts`` at once (polled; fails after DEADLINE
        seconds). Ask for all that one screen must show in one call: a capture can catch a frame
        half drawn (the top of the new screen over the bottom of the old one), so what one
        capture lacks a later one may show."""
        end = time.monotonic() + DEADLINE
        while True:
            shown = self.screen()
            if all(text in shown for text in texts):
                return shown
            if time.monotonic() > end:
                raise AssertionError(f"{texts!r} never all appeared; the screen shows:\n{shown}")
            time.sleep(0.1)  # polling a terminal that another process draws

    def alive(self) -> bool:
        server = ["-L", self.socket] if self.socket else []
        argv = ["tmux", *server, "has-session", "-t", self.name]
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    def close(self) -> None:
        if self.alive():
            self.tmux("kill-session", "-t", self.name)


needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
