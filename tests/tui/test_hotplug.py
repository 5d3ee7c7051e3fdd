"""Hotplug (root): a loop device attached with losetup while the disk picker is open appears in
its table without a key press, and vanishes when detached. No udev daemon runs here: the
kernel's own uevents (pyudev Monitor, source "kernel") carry it; system/hotplug.py lists the
disks again after each burst. Only the loop device this test attached is detached."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from clonebay.system.hotplug import DiskChange, DiskWatcher, diff
from clonebay.system.run import output, run
from clonebay.tui.app import ClonebayApp
from clonebay.tui.screens.disk_picker import DiskPickerScreen
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.services import Role, Services
from clonebay.tui.widgets.disk_table import DiskTable
from tests.tui.helpers import run as run_app
from tests.tui.helpers import screen_of, until

MIB = 1 << 20
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="losetup needs root")


@pytest.fixture
def loop_file(tmp_path: Path) -> Path:
    path = tmp_path / "hotplug.img"
    with open(path, "wb") as f:
        f.truncate(48 * MIB)
    return path


def test_picker_follows_hotplug(loop_file: Path, attached_loops: list[str]) -> None:
    services = Services(())
    app = ClonebayApp(services, watch_disks=True)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        picker = DiskPickerScreen(services, Role.BROWSE)
        await pilot.app.push_screen(picker)
        table = picker.query_one(DiskTable)
        await until(pilot, "the watcher's first listing", lambda: app.hotplug_changes > 0)
        changes = app.hotplug_changes
        dev = output(["losetup", "--find", "--show", str(loop_file)]).strip()
        attached_loops.append(dev)
        await until(pilot, f"{dev} in the table", lambda: dev in table.rows_by_path)
        seen["model"] = table.rows_by_path[dev].disk.model
        await until(pilot, "the watcher's report", lambda: app.hotplug_changes > changes)
        changes = app.hotplug_changes
        run(["losetup", "-d", dev])
        attached_loops.remove(dev)
        # only the watcher can take the row away: the picker does not list again by itself
        await until(pilot, f"{dev} gone", lambda: dev not in table.rows_by_path)
        seen["changes"] = app.hotplug_changes - changes

    run_app(app, script)
    assert seen["model"] == f"loop: {loop_file}"
    assert seen["changes"] >= 1  # the watcher told the app; nobody pressed r


def test_news_before_the_picker_is_composed_is_not_an_error() -> None:
    """The watcher's first listing can reach a picker the app has pushed but not yet composed
    (seen in CI: an error dialog ate the technician's Enter); the picker lists the disks itself
    once mounted."""
    services = Services(())
    app = ClonebayApp(services)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        picker = DiskPickerScreen(services, Role.BROWSE)
        pushed = pilot.app.push_screen(picker)
        app.disks_changed(DiskChange(tuple(services.disks()), added=()))  # before compose
        await pushed
        await until(pilot, "the picker's own listing", lambda: bool(picker.disks))
        seen["screen"] = type(pilot.app.screen).__name__

    run_app(app, script)
    assert seen["screen"] == "DiskPickerScreen"  # no ErrorModal on top


def test_watcher_polls_without_a_monitor(loop_file: Path, attached_loops: list[str]) -> None:
    """The fallback when no uevent socket opens: the disk list every ``poll_interval``."""
    changes: list[DiskChange] = []
    got = threading.Event()

    def on_change(change: DiskChange) -> None:
        changes.append(change)
        got.set()

    watcher = DiskWatcher(on_change, poll_interval=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), kwargs={"monitor": False})
    thread.start()
    try:
        assert watcher.ready.wait(30)
        dev = output(["losetup", "--find", "--show", str(loop_file)]).strip()
        attached_loops.append(dev)
        for _ in range(100):  # other tests may attach loop devices too: wait for ours
            assert got.wait(10), "no change reported"
            got.clear()
            if any(d.path == dev for c in changes[1:] for d in c.added):
                break
    finally:
        stop.set()
        thread.join()
    assert watcher.mode == "poll"
    assert dev not in [d.path for d in changes[0].added]  # the first report: before losetup
    assert any(d.path == dev for c in changes[1:] for d in c.added)


def test_diff_matches_by_path() -> None:
    from clonebay.model import Disk

    a, b, b2, c = Disk("/dev/a", 1), Disk("/dev/b", 2), Disk("/dev/b", 3), Disk("/dev/c", 4)
    change = diff([a, b], [b2, c])
    assert [d.path for d in change.added] == ["/dev/c"]
    assert [d.path for d in change.removed] == ["/dev/a"]
    assert change.changed == (b2,)
    assert not diff([a], [a])
