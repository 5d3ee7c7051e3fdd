"""The TUI in a real terminal: ``python -m clonebay.tui`` runs in a tmux session of a fixed size,
keys go in with send-keys and the screen comes back with capture-pane. A save flow is driven to
the end and the image it wrote is then verified frame by frame by the engine. Only the tmux
session this test started is killed."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clonebay.engine import jobs
from clonebay.testdisks import disks

DEADLINE = 60.0

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


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


@pytest.fixture
def terminal_factory() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        term.close()


def test_save_flow_in_tmux(
    demo_disk: disks.BuiltDisk, tmp_path: Path, terminal_factory: list[Terminal]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    argv = [sys.executable, "-m", "clonebay.tui", "--image-dir", str(images), str(demo_disk.path)]
    term = Terminal(f"clonebay-test-{os.getpid()}", argv, tmp_path)
    terminal_factory.append(term)

    term.wait_for("Save image")
    term.keys("s")
    picker = term.wait_for(str(demo_disk.path))
    assert "Pick the disk to copy FROM" in picker
    term.wait_for("free")  # the guard has judged the first row: the demo disk
    term.keys("Enter")
    term.wait_for("Where should the image go?")
    term.keys("Enter")  # the proposed name
    plan = term.wait_for("to read")
    assert "Start save" in plan and "ntfs" in plan
    term.keys("Enter")
    result = term.wait_for("was saved into the image")
    assert "Verified" in result
    term.keys("Enter")
    term.wait_for("Clone disk")
    term.keys("q")
    end = time.monotonic() + DEADLINE
    while term.alive() and time.monotonic() < end:
        time.sleep(0.1)
    assert not term.alive(), "the TUI did not quit"

    image = images / "demo-disk.image"
    report = jobs.verify_image(str(image))
    assert report.ok and report.frames > 0
