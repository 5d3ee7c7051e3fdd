"""Each screen driven with Pilot on real disks and the real guard (root): what it lets through and
what it refuses. The guards must be visible: the source, a mounted disk and the disk that holds
the running system are dimmed with the guard's words and cannot be picked as a target. Errors
from any worker reach the one handler and show as a modal with the error's title."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, OptionList, Static

from clonebay.model import Disk
from clonebay.system.run import output, run
from clonebay.system.smart import Health
from clonebay.testdisks import disks
from clonebay.tui.app import ClonebayApp
from clonebay.tui.jobs import JobKind
from clonebay.tui.screens.confirm import ConfirmModal
from clonebay.tui.screens.disk_details import DiskDetailsScreen
from clonebay.tui.screens.disk_picker import DiskPickerScreen
from clonebay.tui.screens.error import ErrorModal
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.screens.image_picker import ImagePickerScreen
from clonebay.tui.screens.plan import PlanScreen
from clonebay.tui.services import Role, Services
from clonebay.tui.widgets.disk_table import COLUMNS, DiskTable
from tests.tui.helpers import cell_text, pick_folder_store, screen_of, type_into, until
from tests.tui.helpers import run as run_app
from tests.tui.recorded import BLANK, DATA, LIVE, NVME, RecordedServices
from tests.tui.recorded import DISKS as RECORDED_DISKS

MIB = 1 << 20
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root")


def test_home_lists_jobs_and_quits() -> None:
    app = ClonebayApp(Services((), machine_disks=False), watch_disks=False)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        home = await screen_of(pilot, HomeScreen)
        menu = home.query_one(OptionList)
        options = [menu.get_option_at_index(i) for i in range(menu.option_count)]
        seen["disabled"] = {o.id for o in options if o.disabled}
        seen["enabled"] = {o.id for o in options if not o.disabled}
        await pilot.press("q")

    run_app(app, script)
    assert seen["disabled"] == set()
    assert seen["enabled"] == {"clone", "save", "restore", "disks", "multicast", "browse", "quit"}
    assert app.return_code == 0


def test_ready_command_runs_once_the_first_screen_is_drawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$CLONEBAY_READY_COMMAND (the live system's "tui-ready" event) runs once Home is drawn,
    and once only: it is taken out of the environment, so a shell started later does not
    inherit it."""
    mark = tmp_path / "ready"
    script_file = tmp_path / "ready.sh"
    script_file.write_text(f'#!/bin/sh\necho "$@" >> {mark}\n')
    script_file.chmod(0o755)
    monkeypatch.setenv("CLONEBAY_READY_COMMAND", f"{script_file} tui-ready /dev/tty1")
    app = ClonebayApp(Services((), machine_disks=False), watch_disks=False)

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        await until(pilot, "the ready command", mark.exists)
        await pilot.press("q")

    run_app(app, script)
    assert mark.read_text() == "tui-ready /dev/tty1\n"
    assert "CLONEBAY_READY_COMMAND" not in os.environ


@pytest.fixture
def mounted_disk(tmp_path: Path, attached_loops: list[str]) -> Iterator[str]:
    """A loop device with an ext4 filesystem mounted on it (unmounted and detached after)."""
    image = tmp_path / "mounted.img"
    with open(image, "wb") as f:
        f.truncate(32 * MIB)
    run(["mkfs.ext4", "-q", "-F", str(image)])
    dev = output(["losetup", "--find", "--show", str(image)]).strip()
    attached_loops.append(dev)
    point = tmp_path / "mnt"
    point.mkdir()
    run(["mount", "-o", "ro", dev, str(point)])
    yield dev
    run(["umount", str(point)], check=False)


def test_picker_reads_health_in_a_worker_and_names_the_reasons() -> None:
    """Each disk's Health cell comes from Services.health, asked off the UI thread; the
    highlighted worn disk's SMART reasons show below the table."""
    asked: dict[str, bool] = {}

    class Watched(RecordedServices):
        def health(self, path: str) -> Health:
            asked[path] = threading.current_thread() is threading.main_thread()
            return super().health(path)

    services = Watched()
    app = ClonebayApp(services, watch_disks=False)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        picker = DiskPickerScreen(services, Role.SOURCE)
        await pilot.app.push_screen(picker)
        await until(pilot, "health", lambda: len(picker.health) == len(RECORDED_DISKS))
        table = picker.query_one(DiskTable)
        column = COLUMNS.index("Health")
        seen["cells"] = {p: cell_text(table.get_row(p))[column] for p in table.rows_by_path}
        table.move_cursor(row=table.get_row_index(DATA.path))
        await pilot.pause()
        seen["status"] = str(picker.query_one("#picker-status", Static).render())

    run_app(app, script)
    assert asked == dict.fromkeys(seen["cells"], False)  # every disk, none in the UI thread
    assert seen["cells"] == {
        NVME.path: "good",
        BLANK.path: "good",
        LIVE.path: "-",
        DATA.path: "warning",
    }
    assert "SMART health: warning: 8 reallocated sectors (SMART passed," in seen["status"]


@needs_root
def test_target_guards_are_visible(
    demo_disk: disks.BuiltDisk, blank_target: Path, mounted_disk: str
) -> None:
    """The source, a mounted disk and the live medium are refused as targets, with reasons."""
    services = Services([str(demo_disk.path), str(blank_target)])
    source = Disk(str(demo_disk.path), demo_disk.size, transport="file")
    app = ClonebayApp(services, watch_disks=False)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        picker = DiskPickerScreen(services, Role.TARGET, source=source)
        await pilot.app.push_screen(picker)
        await until(pilot, "verdicts", lambda: len(picker.refusals) == len(picker.disks) > 0)
        seen["refusals"] = dict(picker.refusals)
        seen["live"] = [d.path for d in picker.disks if d.is_live_medium]
        table = picker.query_one(DiskTable)
        column = COLUMNS.index("Status")
        seen["status"] = {p: cell_text(table.get_row(p))[column] for p in table.rows_by_path}
        for _ in range(len(picker.disks)):  # Enter on every refused row: nothing is picked
            row = table.highlighted()
            assert row is not None
            if row.refusal:
                await pilot.press("enter")
                await pilot.pause()
                assert pilot.app.screen is picker
            await pilot.press("down")

    run_app(app, script)
    refusals, status = seen["refusals"], seen["status"]
    assert "is the source" in refusals[str(demo_disk.path)]
    assert "is mounted" in refusals[mounted_disk]
    assert refusals[str(blank_target)] == ""
    assert "is mounted" in status[mounted_disk] and "✗" in status[mounted_disk]
    for live in seen["live"]:  # the disk that holds "/" here (none in some sandboxes)
        assert "running system" in refusals[live]
        assert "LIVE SYSTEM" in status[live]


@needs_root
def test_too_small_target_shows_the_error_modal(demo_disk: disks.BuiltDisk, tmp_path: Path) -> None:
    small = tmp_path / "small.img"
    with open(small, "wb") as f:
        f.truncate(64 * MIB)
    services = Services([str(demo_disk.path), str(small)], machine_disks=False)
    app = ClonebayApp(services, watch_disks=False)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        plan = PlanScreen(services, JobKind.CLONE, str(demo_disk.path), str(small))
        await pilot.app.push_screen(plan)
        modal = await screen_of(pilot, ErrorModal)
        seen["title"], seen["text"] = modal.title_text, modal.text
        await pilot.press("enter")
        await until(pilot, "the plan again", lambda: pilot.app.screen is plan)
        seen["start_disabled"] = plan.query_one("#start", Button).disabled

    run_app(app, script)
    assert seen["title"] == "Target too small"
    assert "nothing was written" in seen["text"]
    assert seen["start_disabled"]


@needs_root
def test_confirm_wants_the_serial_tail(demo_disk: disks.BuiltDisk) -> None:
    """A disk with a serial: "yes" is not enough, its last four characters are."""
    services = Services([str(demo_disk.path)], machine_disks=False)
    disk = Disk(str(demo_disk.path), demo_disk.size, "WDC WD10EZEX", "WD-WCC4E1234567", "", "sata")
    app = ClonebayApp(services, watch_disks=False)
    answers: list[bool | None] = []
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        await pilot.app.push_screen(ConfirmModal(services, disk, "Clone"), answers.append)
        modal = await screen_of(pilot, ConfirmModal)
        assert modal.focused is not None and modal.focused.id == "no"
        yes = modal.query_one("#yes", Button)
        await type_into(pilot, "#confirm-input", "yes")
        seen["yes_after_yes"] = yes.disabled
        await pilot.press("enter")  # not accepted: the modal stays
        assert pilot.app.screen is modal
        await pilot.press(*["backspace"] * 3)
        await type_into(pilot, "#confirm-input", "4567")
        seen["yes_after_tail"] = yes.disabled
        await until(pilot, "what is on it", lambda: any("ntfs" in ln for ln in modal.contents))
        await pilot.click("#yes")
        await until(pilot, "the answer", lambda: bool(answers))

    run_app(app, script)
    assert seen["yes_after_yes"] is True
    assert seen["yes_after_tail"] is False
    assert answers == [True]


@needs_root
def test_image_picker_verifies_and_refuses_unfinished(demo_image: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    (folder / "unfinished.image" / "packs").mkdir(parents=True)
    (folder / demo_image.name).symlink_to(demo_image)
    services = Services((), machine_disks=False, image_dir=str(folder))
    app = ClonebayApp(services, watch_disks=False)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        await pilot.press("r")
        await pick_folder_store(pilot)
        picker = await screen_of(pilot, ImagePickerScreen)
        await until(pilot, "the images", lambda: len(picker.entries) == 2)
        seen["problems"] = {e.name: e.problem for e in picker.entries.values()}
        await pilot.press("v")  # the first row: the demo image
        shown = str(folder / demo_image.name)
        await until(pilot, "the verdict", lambda: "OK" in picker.verdicts.get(shown, ""))
        await pilot.press("down", "enter")  # the unfinished image: refused
        await pilot.pause()
        seen["still_picking"] = pilot.app.screen is picker

    run_app(app, script)
    assert seen["problems"]["demo-disk.image"] == ""
    assert "no manifest" in seen["problems"]["unfinished.image"]
    assert seen["still_picking"]


@needs_root
def test_disk_details_show_the_probe(demo_disk: disks.BuiltDisk) -> None:
    services = Services([str(demo_disk.path)], machine_disks=False)
    app = ClonebayApp(services, watch_disks=False)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        home = await screen_of(pilot, HomeScreen)
        await pilot.press("d")
        await until(pilot, "the picker", lambda: pilot.app.screen is not home)
        picker = await screen_of(pilot, DiskPickerScreen)
        await until(pilot, "verdicts", lambda: len(picker.refusals) == 1)
        await pilot.press("enter")
        details = await screen_of(pilot, DiskDetailsScreen)
        await until(pilot, "the probe", lambda: details.report is not None)
        await pilot.pause()
        table: DataTable[Any] = details.query_one("#details-layout DataTable", DataTable)
        seen["table"] = [cell_text(table.get_row_at(i)) for i in range(table.row_count)]

    run_app(app, script)
    fstypes = {row[0]: row[3] for row in seen["table"]}
    for part in demo_disk.partitions:
        if part.fstype in ("fat32", "ntfs", "ext4", "swap"):
            assert fstypes[f"p{part.number}"] == part.fstype
