"""The clonebay TUI: Home and the job flows, one error handler, and live disks.

The app owns three things: the flow worker (one job's screens at a time, flows.py), the hotplug
worker (Services.watch → system/hotplug.py, which falls back to listing the disks every 2 s when
no uevent source opens), which hands every change of the disk list to the open disk pickers, and
the one error handler: any worker that raises, on any screen, ends in ``show_error`` and an
ErrorModal with the error's title and text.

``run_tui`` is what ``clonebay`` (no arguments) and ``make demo`` start.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.worker import Worker, WorkerState

from clonebay.system.hotplug import DiskChange
from clonebay.tui import flows
from clonebay.tui.messages import WorkerError
from clonebay.tui.screens.ask import AskModal
from clonebay.tui.screens.disk_picker import DiskPickerScreen
from clonebay.tui.screens.error import ErrorModal
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.screens.progress import ProgressScreen
from clonebay.tui.services import Services


class ClonebayApp(App[int]):
    """``services``: the door to disks and jobs; ``watch_disks``: follow hotplug."""

    CSS_PATH = "app.tcss"
    TITLE = "clonebay"
    SUB_TITLE = "disk cloning and imaging"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True)
    ]

    def __init__(self, services: Services, *, watch_disks: bool = True) -> None:
        super().__init__()
        self.services = services
        self.watch_disks = watch_disks
        self.stop_watching = threading.Event()
        self.hotplug_changes = 0

    def on_mount(self) -> None:
        self.push_screen(HomeScreen())
        if self.watch_disks:
            self.watch_hotplug()

    def on_unmount(self) -> None:
        self.stop_watching.set()

    # --- flows -------------------------------------------------------------------------------

    def on_home_screen_chosen(self, message: HomeScreen.Chosen) -> None:
        if message.choice == "quit":
            self.exit(0)
            return
        flow = flows.FLOWS.get(message.choice)
        if flow is None:
            return
        self.run_worker(
            flow(self, self.services), group="flow", exclusive=True, exit_on_error=False
        )

    # --- the one error handler --------------------------------------------------------------

    def show_error(self, error: BaseException) -> None:
        """Every worker error ends here: a modal with the error's title and text."""
        self.push_screen(ErrorModal(error))

    def on_worker_error(self, message: WorkerError) -> None:
        self.show_error(message.error)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        error = event.worker.error
        if event.state is WorkerState.ERROR and error is not None:
            self.show_error(error)

    # --- disks appearing and vanishing ------------------------------------------------------

    @work(thread=True, exit_on_error=False, group="hotplug", name="hotplug")
    def watch_hotplug(self) -> None:
        self.services.watch(self._change_from_thread, self.stop_watching)

    def _change_from_thread(self, change: DiskChange) -> None:
        if not self.stop_watching.is_set():
            self.call_from_thread(self.disks_changed, change)

    def disks_changed(self, change: DiskChange) -> None:
        """A new disk list from the watcher: every open picker shows it."""
        self.hotplug_changes += 1
        self.services.forget(*(d.path for d in (*change.removed, *change.changed)))
        for screen in self.screen_stack:
            if isinstance(screen, DiskPickerScreen):
                screen.disks_changed(list(change.disks))

    # --- quitting ---------------------------------------------------------------------------

    async def action_quit(self) -> None:
        screen = self.screen
        if isinstance(screen, ProgressScreen) and screen.failure is None:
            screen.action_cancel()  # a running job is cancelled first, never abandoned
            return
        self.push_screen(
            AskModal("Quit clonebay?", "Leave clonebay?", yes="Quit", no="Stay"),
            self._quit_answered,
        )

    def _quit_answered(self, leave: bool | None) -> None:
        if leave:
            self.exit(0)


def run_tui(disk_paths: list[str] | None = None, image_dir: str | None = None) -> int:
    """Start the TUI on this machine's disks plus ``disk_paths`` (image files or devices named
    on the command line, listed first); images are looked for and saved in ``image_dir``
    (default: the current folder). Returns the exit code."""
    logging.getLogger("clonebay").addHandler(logging.NullHandler())  # nothing on the screen
    services = Services(disk_paths or [], image_dir=os.path.abspath(image_dir or os.getcwd()))
    app = ClonebayApp(services)
    app.run()
    return app.return_code or 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m clonebay.tui [--image-dir DIR] [DISK ...]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m clonebay.tui")
    parser.add_argument("disks", nargs="*", help="image files or devices to list first")
    parser.add_argument("--image-dir", help="folder for images (default: current folder)")
    args = parser.parse_args(argv)
    return run_tui(args.disks, args.image_dir)
