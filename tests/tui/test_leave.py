"""The app leaving because its terminal went away (TerminalGone: what TerminalDriver posts on a
tty hangup, SIGHUP or SIGTERM), with Pilot and real jobs: a clone in the middle of its copy is
cancelled, and the app exits only once the job has stopped, so that what started the TUI (the
demo and its loop devices) cleans up after a job that is over. The target is left plainly
incomplete, as after a cancel the user asked for. The real terminal is in
tests/safety/test_tui_hangup.py."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from clonebay.engine.inspect import inspect_disk
from clonebay.testdisks import disks
from clonebay.tui import app as app_module
from clonebay.tui.app import HANGUP_CODE, ClonebayApp, TerminalGone
from clonebay.tui.jobs import JobRequest, Outcome, TickSink
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.screens.progress import ProgressScreen
from tests.tui.helpers import run, screen_of, until
from tests.tui.test_flows import GatedServices, confirm_yes, pick_disk, start_plan


class WatchedServices(GatedServices):
    """GatedServices that say whether a job is still in the engine."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_job = threading.Event()

    def run(self, request: JobRequest, sink: TickSink, cancel: threading.Event) -> Outcome:
        self.in_job.set()
        try:
            return super().run(request, sink, cancel)
        finally:
            self.in_job.clear()


class ExitWatch(ClonebayApp):
    """Notes whether the job was still running when the app decided to exit."""

    CSS_PATH = str(Path(app_module.__file__).with_name("app.tcss"))  # not beside this test
    job_running_at_exit: bool | None = None

    def exit(self, *args: Any, **kwargs: Any) -> None:
        assert isinstance(self.services, WatchedServices)
        self.job_running_at_exit = self.services.in_job.is_set()
        super().exit(*args, **kwargs)


def test_terminal_gone_cancels_the_job_then_exits(
    demo_disk: disks.BuiltDisk, blank_target: Path
) -> None:
    services = WatchedServices([str(demo_disk.path), str(blank_target)], machine_disks=False)
    app = ExitWatch(services, watch_disks=False)
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
