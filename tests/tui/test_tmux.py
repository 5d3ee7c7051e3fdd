"""The TUI in a real terminal: ``python -m clonebay.tui`` runs in a tmux session of a fixed size,
keys go in with send-keys and the screen comes back with capture-pane. A save flow is driven to
the end and the image it wrote is then verified frame by frame by the engine. Only the tmux
session this test started is killed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from clonebay.engine import jobs
from clonebay.testdisks import disks
from tests.tui.terminal import DEADLINE, Terminal, needs_tmux

pytestmark = needs_tmux


def test_save_flow_in_tmux(
    demo_disk: disks.BuiltDisk, tmp_path: Path, terminal_factory: list[Terminal]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    argv = [sys.executable, "-m", "clonebay.tui", "--image-dir", str(images), str(demo_disk.path)]
    # wide enough for the Status column beside this machine's disks (the demo disk's long
    # pytest path, and loop devices other tests may have left behind)
    term = Terminal(f"clonebay-test-{os.getpid()}", argv, tmp_path, width=170)
    terminal_factory.append(term)

    term.wait_for("Save image")
    term.keys("s")
    term.wait_for(str(demo_disk.path), "Pick the disk to copy FROM")
    term.wait_for("free")  # the guard has judged the first row: the demo disk
    term.keys("Enter")
    term.wait_for("Where are the images?")
    term.keys("Enter")  # the first row: the folder given with --image-dir
    term.wait_for("Where should the image go?")
    term.keys("Enter")  # the proposed name
    term.wait_for("to read", "Start save", "ntfs")
    term.keys("Enter")
    term.wait_for("was saved into the image", "Verified")
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
