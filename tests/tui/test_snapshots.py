"""Snapshot tests: every screen drawn at 120x40 from recorded data (tests/tui/recorded.py) and
compared with the SVG kept in tests/tui/__snapshots__ (pytest-textual-snapshot). A change in
what a technician sees shows up as a failing snapshot with a visual diff; accept it with
``pytest tests/tui/test_snapshots.py --snapshot-update`` after looking at it.

The cursor blink of a focused Input is switched off, and every worker has finished, before the
picture is taken."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Input

from clonebay.errors import TargetTooSmallError
from clonebay.tui.app import ClonebayApp
from clonebay.tui.jobs import JobKind, JobRequest, failed
from clonebay.tui.screens.ask import AskModal
from clonebay.tui.screens.confirm import ConfirmModal
from clonebay.tui.screens.disk_details import DiskDetailsScreen
from clonebay.tui.screens.disk_picker import DiskPickerScreen
from clonebay.tui.screens.error import ErrorModal
from clonebay.tui.screens.image_picker import ImagePickerScreen
from clonebay.tui.screens.plan import PlanScreen
from clonebay.tui.screens.progress import ProgressScreen
from clonebay.tui.screens.result import ResultScreen
from clonebay.tui.screens.save_target import SaveTargetScreen
from clonebay.tui.services import Role
from tests.tui.helpers import SIZE, until
from tests.tui.recorded import BLANK, DATA, DONE, IMAGE, NVME, RecordedServices

SnapCompare = Callable[..., bool]
Before = Callable[[Pilot[Any]], Awaitable[None]]


async def settle(pilot: Pilot[Any]) -> None:
    """Let every worker finish and the screen repaint; freeze Input cursors."""
    await until(pilot, "the workers", lambda: not any(w.is_running for w in pilot.app.workers))
    await pilot.pause()
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause()


def showing(make: Callable[[RecordedServices], Screen[Any]]) -> tuple[ClonebayApp, Before]:
    """An app on recorded data, and a run_before that pushes the screen ``make`` builds."""
    services = RecordedServices()
    app = ClonebayApp(services, watch_disks=False)

    async def before(pilot: Pilot[Any]) -> None:
        await pilot.pause()
        await pilot.app.push_screen(make(services))
        await settle(pilot)

    return app, before


def snap(snap_compare: SnapCompare, make: Callable[[RecordedServices], Screen[Any]]) -> None:
    app, before = showing(make)
    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_home(snap_compare: SnapCompare) -> None:
    app = ClonebayApp(RecordedServices(), watch_disks=False)
    assert snap_compare(app, terminal_size=SIZE)


def test_disk_picker_source(snap_compare: SnapCompare) -> None:
    snap(snap_compare, lambda s: DiskPickerScreen(s, Role.SOURCE))


def test_disk_picker_target_guards(snap_compare: SnapCompare) -> None:
    """The source, the live USB stick and the mounted disk are dimmed, with the reason."""
    snap(snap_compare, lambda s: DiskPickerScreen(s, Role.TARGET, source=NVME))


def test_disk_details(snap_compare: SnapCompare) -> None:
    snap(snap_compare, lambda s: DiskDetailsScreen(s, NVME))


def test_image_picker(snap_compare: SnapCompare) -> None:
    app, before = showing(lambda s: ImagePickerScreen(s, "/srv/images"))

    async def verify_first(pilot: Pilot[Any]) -> None:
        await before(pilot)
        await pilot.press("v")
        screen = pilot.app.screen
        assert isinstance(screen, ImagePickerScreen)
        await until(pilot, "the verdict", lambda: screen.verdicts.get(IMAGE, "").startswith("OK"))
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=verify_first)


def test_save_target(snap_compare: SnapCompare) -> None:
    snap(snap_compare, lambda s: SaveTargetScreen(s, NVME, "/srv/images"))


def test_plan_clone(snap_compare: SnapCompare) -> None:
    snap(
        snap_compare,
        lambda s: PlanScreen(s, JobKind.CLONE, NVME.path, BLANK.path, target_size=BLANK.size),
    )


def test_plan_save(snap_compare: SnapCompare) -> None:
    snap(snap_compare, lambda s: PlanScreen(s, JobKind.SAVE, NVME.path, IMAGE))


def test_plan_save_of_a_worn_disk(snap_compare: SnapCompare) -> None:
    """The source's SMART warning (8 reallocated sectors) stands above the buttons."""
    snap(snap_compare, lambda s: PlanScreen(s, JobKind.SAVE, DATA.path, IMAGE))


def test_plan_restore(snap_compare: SnapCompare) -> None:
    snap(
        snap_compare,
        lambda s: PlanScreen(s, JobKind.RESTORE, IMAGE, BLANK.path, target_size=BLANK.size),
    )


def test_confirm(snap_compare: SnapCompare) -> None:
    """Over the plan: names the target by model, serial, size and contents; asks for the
    serial's last four characters; "No" has the focus."""
    app, before = showing(
        lambda s: PlanScreen(
            s, JobKind.CLONE, NVME.path, BLANK.path, target_size=BLANK.size, confirm=BLANK
        )
    )

    async def start(pilot: Pilot[Any]) -> None:
        await before(pilot)
        await pilot.press("enter")  # "Start clone"
        await until(pilot, "Confirm", lambda: isinstance(pilot.app.screen, ConfirmModal))
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=start)


def test_progress(snap_compare: SnapCompare) -> None:
    services = RecordedServices()
    app = ClonebayApp(services, watch_disks=False)
    request = JobRequest(JobKind.CLONE, NVME.path, BLANK.path)

    async def before(pilot: Pilot[Any]) -> None:
        await pilot.pause()
        pilot.app.push_screen(ProgressScreen(services, request))
        await until(pilot, "the job's progress", services.ticked.is_set)
        await pilot.pause(0.3)  # one tick of the log pane's drain timer (0.25 s)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_result_done(snap_compare: SnapCompare) -> None:
    snap(snap_compare, lambda s: ResultScreen(DONE))


def test_result_failed(snap_compare: SnapCompare) -> None:
    request = JobRequest(JobKind.RESTORE, IMAGE, BLANK.path)
    error = TargetTooSmallError(
        "the image's disk is 931.5 GiB (1000204886016 bytes); the target holds 465.8 GiB"
        " (500107862016 bytes). Shrinking onto a smaller disk is not available yet"
    )
    snap(snap_compare, lambda s: ResultScreen(failed(request, error, cancelled=False)))


def test_error_modal(snap_compare: SnapCompare) -> None:
    error = TargetTooSmallError(
        "the target holds 465.8 GiB (500107862016 bytes); the source's partitions need"
        " 931.5 GiB (shrinking onto a smaller disk is not available yet); nothing was written"
    )
    snap(snap_compare, lambda s: ErrorModal(error))


def test_cancel_question(snap_compare: SnapCompare) -> None:
    snap(
        snap_compare,
        lambda s: AskModal(
            "Cancel the job?",
            "The job stops within a few seconds and the target is left incomplete"
            " (it will say so: it cannot be mistaken for a good copy).",
            yes="Yes, stop it",
            no="No, keep going",
        ),
    )
