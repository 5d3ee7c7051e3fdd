"""Tried as a new user: ``make demo``'s terminal was killed (the tmux server went) and the demo
kept running, its loop devices attached, spinning on a tty that only gives EOF. The TUI and the
demo run here in tmux (a server of the test's own, so that killing it touches nothing else),
under a shell that ignores SIGHUP: the process does not get the signal, only its tty hangs up.
It must leave as on quit, within a bounded wait, with exit status 129, and the demo's loop
devices must be gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.edgedisks import MIB, gpt_disk
from tests.tui.terminal import DEADLINE, Terminal, needs_tmux

pytestmark = needs_tmux
HANGUP_STATUS = 129  # 128 + SIGHUP


def wait_until(what: str, check: Callable[[], bool]) -> None:
    end = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {DEADLINE:.0f} s waiting for {what}")
        time.sleep(0.1)  # polling processes and files another program changes


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def child_of(pid: int) -> int:
    """The one child of the pane's shell (the TUI or the demo), once the shell started it."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    wait_until("the pane's command", lambda: len(children.read_text().split()) == 1)
    return int(children.read_text())


def loops_over(path: Path) -> list[str]:
    argv = ["losetup", "--associated", str(path), "--output", "NAME", "--noheadings"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()


@pytest.fixture
def started() -> Iterator[list[tuple[Terminal, int]]]:
    """Terminals and the process each runs; a process still there at the end (the test failed)
    is killed, by its pid only, and its tmux server with it."""
    opened: list[tuple[Terminal, int]] = []
    yield opened
    for term, pid in opened:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        if term.alive():
            term.kill_server()


def start(
    argv: list[str], tmp_path: Path, opened: list[tuple[Terminal, int]]
) -> tuple[Terminal, int, Path]:
    status = tmp_path / "status"
    name = f"clonebay-hangup-{os.getpid()}"
    term = Terminal(name, argv, tmp_path, socket=name, status=status)
    pid = child_of(term.pane_pid())
    opened.append((term, pid))
    return term, pid, status


def test_tui_leaves_when_its_terminal_is_killed(
    tmp_path: Path, started: list[tuple[Terminal, int]]
) -> None:
    disk = gpt_disk(tmp_path / "disk.img", 64 * MIB, "1:2048:0")
    argv = [sys.executable, "-m", "clonebay.tui", "--image-dir", str(tmp_path), str(disk)]
    term, pid, status = start(argv, tmp_path, started)
    term.wait_for("Clone disk")
    term.kill_server()
    wait_until("the TUI to exit", lambda: not alive(pid))
    wait_until("its exit status", status.exists)
    assert status.read_text().strip() == str(HANGUP_STATUS)


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo attaches loop devices as root")
def test_demo_leaves_and_detaches_its_loop_devices(
    tmp_path: Path, started: list[tuple[Terminal, int]]
) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    gpt_disk(out / "gpt-disk.img", 64 * MIB, "1:2048:+16M", "2:0:0")
    argv = [sys.executable, "-m", "clonebay.demo", "--out", str(out), "--no-tour"]
    term, pid, status = start(argv, tmp_path, started)
    term.wait_for("Clone disk")
    files = [out / "gpt-disk.img", out / "blank-target.img"]
    devices = [loops_over(f) for f in files]
    assert all(len(d) == 1 for d in devices), devices
    term.kill_server()
    wait_until("the demo to exit", lambda: not alive(pid))
    for f in files:
        wait_until(f"{f.name} detached", lambda f=f: loops_over(f) == [])
    name = Path(devices[0][0]).name
    assert not Path("/sys/block", name, name + "p1").exists()
    wait_until("its exit status", status.exists)
    assert status.read_text().strip() == str(HANGUP_STATUS)
