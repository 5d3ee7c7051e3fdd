"""``make demo``'s TUI part as root, in a real terminal: the demo disks are attached as loop
devices, the TUI lists them as block devices with their partitions, and every loop device the
demo attached is gone after the TUI quits — and also when the terminal is killed under it.
(The command line tour is skipped: other tests cover those commands.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from clonebay.testdisks import disks
from tests.tui.terminal import DEADLINE, Terminal, needs_tmux

pytestmark = [
    needs_tmux,
    pytest.mark.skipif(os.geteuid() != 0, reason="the demo attaches loop devices as root"),
]


def loops_over(path: Path) -> list[str]:
    """The loop devices backed by ``path`` (losetup --associated)."""
    out = subprocess.run(
        ["losetup", "--associated", str(path), "--output", "NAME", "--noheadings"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def wait_until(what: str, check: Callable[[], bool]) -> None:
    end = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def start_demo(demo_disk: disks.BuiltDisk, tmp_path: Path, opened: list[Terminal]) -> Terminal:
    out = tmp_path / "demo"
    out.mkdir()
    subprocess.run(
        ["cp", "--sparse=always", str(demo_disk.path), str(out / "gpt-disk.img")], check=True
    )
    argv = [sys.executable, "-m", "clonebay.demo", "--out", str(out), "--no-tour"]
    term = Terminal(f"clonebay-demo-{os.getpid()}", argv, tmp_path)
    opened.append(term)
    return term


def test_demo_attaches_loop_devices_and_detaches_them(
    demo_disk: disks.BuiltDisk, tmp_path: Path, terminal_factory: list[Terminal]
) -> None:
    term = start_demo(demo_disk, tmp_path, terminal_factory)
    term.wait_for("Clone disk")
    files = [tmp_path / "demo" / name for name in ("gpt-disk.img", "blank-target.img")]
    devices = [loops_over(f) for f in files]
    assert all(len(d) == 1 for d in devices), devices
    gpt_dev = devices[0][0]
    # the TUI lists the loop devices, with the partitions the demo made visible
    term.keys("d")
    term.wait_for(gpt_dev, "loop")
    parts = sorted(p.name for p in Path("/sys/block", Path(gpt_dev).name).glob("loop*p*"))
    assert len(parts) == len(demo_disk.partitions), parts
    term.keys("Escape")
    term.wait_for("Clone disk")
    term.keys("q")
    wait_until("the demo to quit", lambda: not term.alive())
    for f in files:
        wait_until(f"{f.name} detached", lambda f=f: loops_over(f) == [])
    assert not Path("/sys/block", Path(gpt_dev).name, Path(gpt_dev).name + "p1").exists()


def test_demo_killed_leaves_no_loop_device(
    demo_disk: disks.BuiltDisk, tmp_path: Path, terminal_factory: list[Terminal]
) -> None:
    term = start_demo(demo_disk, tmp_path, terminal_factory)
    term.wait_for("Clone disk")
    files = [tmp_path / "demo" / name for name in ("gpt-disk.img", "blank-target.img")]
    devices = [loops_over(f) for f in files]
    assert all(len(d) == 1 for d in devices), devices
    term.close()  # the terminal goes away under the TUI: SIGHUP, no cleanup code runs
    for f in files:
        wait_until(f"{f.name} detached by the kernel", lambda f=f: loops_over(f) == [])
    name = Path(devices[0][0]).name
    wait_until("its partitions gone", lambda: not Path("/sys/block", name, name + "p1").exists())
