"""The app leaving because its terminal went away (TerminalGone: what TerminalDriver posts on a
tty hangup, SIGHUP or SIGTERM), with Pilot and real jobs: a clone in the middle of its copy is
cancelled, and the app exits only once the job has stopped, so that what started the TUI (the
demo and its loop devices) cleans up after a job that is over. The target is left plainly
incomplete, as after a cancel the user asked for; a Browse copy stops and its partition is
unmounted before the app exits. The real terminal is in tests/safety/test_tui_hangup.py."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from clonebay.engine.inspect import inspect_disk
from clonebay.testdisks import disks
from clonebay.tui import app as app_module
from clonebay.tui.app import HANGUP_CODE, ClonebayApp, TerminalGone
from clonebay.tui.jobs import JobRequest, Outcome, StateSink, TickSink
from clonebay.tui.screens.browse_extract import ExtractScreen
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.screens.progress import ProgressScreen
from clonebay.tui.services import ImageEntry, Services
from tests.tui.helpers import run, screen_of, until
from tests.tui.test_browse import our_mounts
from tests.tui.test_flows import GatedServices, confirm_yes, pick_disk, start_plan


class WatchedServices(GatedServices):
    """GatedServices that say whether a job is still in the engine."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_job = threading.Event()

    def run(
        self,
        request: JobRequest,
        sink: TickSink,
        cancel: threading.Event,
        on_state: StateSink | None = None,
    ) -> Outcome:
        self.in_job.set()
        try:
            return super().run(request, sink, cancel, on_state)
        finally:
            self.in_job.clear()


class GatedExtract(Services):
    """A real extract whose first progress event waits until the test lets it go on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.reached = threading.Event()
        self.in_job = threading.Event()

    def extract(self, *args: Any, sink: Any, cancel: threading.Event, **kwargs: Any) -> Any:
        def gated(tick: Any) -> None:
            self.reached.set()
            self.gate.wait(30)
            sink(tick)

        self.in_job.set()
        try:
            return super().extract(*args, sink=gated, cancel=cancel, **kwargs)
        finally:
            self.in_job.clear()


class ExitWatch(ClonebayApp):
    """Notes whether the job was still running when the app decided to exit, and what of
    the image was still mounted then."""

    CSS_PATH = str(Path(app_module.__file__).with_name("app.tcss"))  # not beside this test
    job_running_at_exit: bool | None = None
    mounted_at_exit: list[str] | None = None

    def __init__(self, services: Services, in_job: threading.Event) -> None:
        super().__init__(services, watch_disks=False)
        self.in_job = in_job

    def exit(self, *args: Any, **kwargs: Any) -> None:
        self.job_running_at_exit = self.in_job.is_set()
        self.mounted_at_exit = our_mounts()
        super().exit(*args, **kwargs)


def test_terminal_gone_cancels_the_job_then_exits(
    demo_disk: disks.BuiltDisk, blank_target: Path
) -> None:
    services = WatchedServices([str(demo_disk.path), str(blank_target)], machine_disks=False)
    app = ExitWatch(services, services.in_job)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        home = await screen_of(pilot, HomeScreen)
        await pilot.press("c")
        source = await pick_disk(pilot, home, row=0)
        await pick_disk(pilot, source, row=1)
        await start_plan(pilot)
        await confirm_yes(pilot)
        progress = await screen_of(pilot, ProgressScreen)
        await until(pilot, "the copy running", services.reached.is_set)
        app.post_message(TerminalGone("the terminal hung up", HANGUP_CODE))
        await until(pilot, "the job's cancel", progress.cancel.is_set)
        seen["exited_early"] = app.job_running_at_exit is not None
        services.gate.set()  # the engine goes on to its next chunk, sees the cancel, stops
        await until(pilot, "the app to exit", lambda: app.job_running_at_exit is not None)

    run(app, script)
    assert seen["exited_early"] is False, "the app exited while the job was still gated"
    assert app.job_running_at_exit is False
    assert app.return_code == HANGUP_CODE
    # a cancelled clone wipes the old table first and writes the new one last: none is there
    assert inspect_disk(str(blank_target)).table.kind == "none"


def test_terminal_gone_during_an_extract_unmounts_the_image(
    demo_image: Path, tmp_path: Path
) -> None:
    """The Browse copy mounts the partition for the copy: leaving stops the copy after the
    file it is on, and the partition is unmounted (loop device detached) before the app exits."""
    services = GatedExtract([], machine_disks=False, image_dir=str(demo_image.parent))
    part = next(p for p in services.partitions(str(demo_image)) if p.fstype == "ext4")
    entry = ImageEntry(str(demo_image), demo_image.name)
    screen = ExtractScreen(services, entry, part, ["etc", "usr"], str(tmp_path / "out"))
    app = ExitWatch(services, services.in_job)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        await pilot.app.push_screen(screen)
        await screen_of(pilot, ExtractScreen)
        await pilot.press("enter")
        await until(pilot, "the copy running", services.reached.is_set)
        seen["mounted_during"] = our_mounts()
        app.post_message(TerminalGone("SIGHUP arrived", HANGUP_CODE))
        await until(pilot, "the copy's cancel", screen.cancel.is_set)
        services.gate.set()
        await until(pilot, "the app to exit", lambda: app.job_running_at_exit is not None)

    run(app, script)
    assert seen["mounted_during"], "the copy runs on a mounted partition"
    assert app.job_running_at_exit is False
    assert app.mounted_at_exit == []
    assert our_mounts() == []
    assert app.return_code == HANGUP_CODE
