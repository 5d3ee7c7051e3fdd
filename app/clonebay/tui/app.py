"""The clonebay TUI: Home and the job flows, one error handler, and live disks.

The app owns three things: the flow worker (one job's screens at a time, flows.py), the hotplug
worker (Services.watch → system/hotplug.py, which falls back to listing the disks every 2 s when
no uevent source opens), which hands every change of the disk list to the open disk pickers, and
the one error handler: any worker that raises, on any screen, ends in ``show_error`` and an
ErrorModal with the error's title and text.

When the terminal goes away (tmux or ssh killed, the window closed: the tty hangs up, reads
give EOF, writes EIO) or SIGHUP or SIGTERM arrives, the app leaves as on quit, without asking:
every running job is cancelled and waited for (it stops within a chunk, and the partition a
browse job mounted is unmounted), then the app exits with 128 + the signal. The terminal
driver (TerminalDriver) notices: a thread polls the tty for POLLHUP, a write error on the
screen is caught before it can end textual's writer thread (whose full queue would otherwise
block the app for good), and the signals are handled in the event loop. What ran the TUI
(the demo: its loop devices) cleans up after ``run_tui`` returns.

``run_tui`` is what ``clonebay`` (no arguments) and ``make demo`` start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import shlex
import signal
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.driver import Driver
from textual.drivers.linux_driver import LinuxDriver
from textual.message import Message
from textual.worker import Worker, WorkerState

from clonebay.system.run import spawn
from clonebay.tui.messages import WorkerError
from clonebay.tui.screens.error import ErrorModal
from clonebay.tui.screens.home import HomeScreen

if TYPE_CHECKING:
    from clonebay.system.hotplug import DiskChange
    from clonebay.tui.services import Services

LEAVE_SIGNALS = (signal.SIGHUP, signal.SIGTERM)
HANGUP_CODE = 128 + signal.SIGHUP  # the exit code after the terminal went away, as for SIGHUP
BACKGROUND = ("flow", "leave")  # workers that wait on screens: not waited for when leaving


class TerminalGone(Message):
    """The terminal went away, or SIGHUP/SIGTERM arrived: leave without asking."""

    def __init__(self, why: str, code: int) -> None:
        super().__init__()
        self.why = why
        self.code = code


class _ScreenOutput:
    """What textual's writer thread writes the screen into. A write to a terminal that hung up
    fails (EIO); uncaught, that ends the writer thread, its queue (30 writes) fills and the app
    blocks for good on the next write, unable even to quit. Here the write is dropped and the
    failure reported once."""

    def __init__(self, file: TextIO, failed: Callable[[str], None]) -> None:
        self._file = file
        self._failed = failed

    def write(self, text: str) -> int:
        try:
            return self._file.write(text)
        except OSError as exc:
            self._failed(f"the terminal cannot be written: {exc.strerror or exc}")
            return len(text)

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as exc:
            self._failed(f"the terminal cannot be written: {exc.strerror or exc}")

    def fileno(self) -> int:
        return self._file.fileno()


class TerminalDriver(LinuxDriver):
    """textual's Linux driver, and a TerminalGone message to the app when the terminal goes."""

    def __init__(self, app: App[Any], **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        screen = self._file
        assert screen is not None, "no stderr to draw on"
        self._file = _ScreenOutput(screen, self._write_failed)  # type: ignore[assignment]
        self._ttys = [fd for fd in (0, 1, 2) if os.isatty(fd)]
        self._lock = threading.Lock()
        self._reported = False
        self._hung_up = False
        self._wake: tuple[int, int] | None = None
        self._quiet_input = -1  # after a hangup: the write end of the empty pipe read as input
        self._watcher: threading.Thread | None = None
        self._old_handlers: dict[signal.Signals, Any] = {}

    def start_application_mode(self) -> None:
        super().start_application_mode()  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        for sig in LEAVE_SIGNALS:
            old = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, self._report, f"{sig.name} arrived", 128 + sig)
            except (RuntimeError, ValueError):  # not the main thread: the tty watch remains
                break
            self._old_handlers[sig] = old
        self._wake = os.pipe2(os.O_CLOEXEC)
        self._watcher = threading.Thread(target=self._watch, name="terminal-watch", daemon=True)
        self._watcher.start()

    def run_input_thread(self) -> None:
        try:
            super().run_input_thread()
        except OSError as exc:  # EIO: the tty is going away (the watch may not have seen it yet)
            self._report(f"the terminal cannot be read: {exc.strerror or exc}", HANGUP_CODE)

    def close(self) -> None:
        if self._wake is not None and self._watcher is not None:
            os.write(self._wake[1], b"x")
            self._watcher.join()
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        if self._quiet_input >= 0:  # textual's input thread is done: stdin may give EOF now
            os.close(self._quiet_input)
            self._quiet_input = -1
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for sig, old in self._old_handlers.items():
            if loop is not None:
                loop.remove_signal_handler(sig)
            # after a hangup the caller's cleanup (the demo's loop devices) must not be cut
            # short by the SIGHUP a shell sends its jobs when it goes
            signal.signal(sig, signal.SIG_IGN if self._hung_up else old)
        self._old_handlers.clear()
        super().close()

    def _watch(self) -> None:
        """Block until a tty hangs up (POLLHUP and POLLERR are always polled) or ``close``."""
        assert self._wake is not None
        poller = select.poll()
        for fd in self._ttys:
            poller.register(fd, 0)
        poller.register(self._wake[0], select.POLLIN)
        if any(fd != self._wake[0] for fd, _ in poller.poll()):
            self._hang_up()

    def _hang_up(self) -> None:
        """Quiet files in place of the dead tty: the input is an empty pipe (a hung-up tty
        gives EOF at once, and textual's input thread would spin on it until the app is gone;
        non-blocking, so a read the thread had already decided on fails with EAGAIN and ends it
        instead of waiting for ever), and what is still written on the way out (the last
        frames, an error printed at exit) goes to /dev/null instead of failing with EIO."""
        self._hung_up = True
        read_end, self._quiet_input = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)  # closed by close()
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        for fd in self._ttys:
            os.dup2(read_end if fd == self.fileno else null, fd)
        os.close(null)
        os.close(read_end)
        self._report("the terminal hung up", HANGUP_CODE)

    def _write_failed(self, why: str) -> None:
        self._report(why, HANGUP_CODE)

    def _report(self, why: str, code: int) -> None:
        """Tell the app once (the watch, the writer thread and a signal may all notice)."""
        with self._lock:
            if self._reported:
                return
            self._reported = True
        self._app.post_message(TerminalGone(why, code))


class ClonebayApp(App[int]):
    """``services``: the door to disks and jobs, or what makes it on first use (``run_tui``
    passes a maker: the engine's modules then load after the first screen is drawn, not
    before it); ``watch_disks``: follow hotplug, from the first screen on."""

    CSS_PATH = "app.tcss"
    TITLE = "clonebay"
    SUB_TITLE = "disk cloning and imaging"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True)
    ]

    def __init__(
        self, services: Services | Callable[[], Services], *, watch_disks: bool = True
    ) -> None:
        super().__init__()
        self._services: Services | None = None
        self._make_services: Callable[[], Services] | None = None
        if callable(services):
            self._make_services = services
        else:
            self._services = services
        self._services_lock = threading.Lock()
        self.watch_disks = watch_disks
        self.stop_watching = threading.Event()
        self.hotplug_changes = 0
        self.leaving = False

    def get_driver_class(self) -> type[Driver]:
        return TerminalDriver  # a test's headless run uses textual's headless driver instead

    @property
    def services(self) -> Services:
        """The Services, made on first use (from any thread: the hotplug worker's is usually
        the first)."""
        with self._services_lock:
            if self._services is None:
                assert self._make_services is not None
                self._services = self._make_services()
            return self._services

    def on_mount(self) -> None:
        self.push_screen(HomeScreen())
        self.call_after_refresh(self._first_screen_drawn)

    def _first_screen_drawn(self) -> None:
        """Run $CLONEBAY_READY_COMMAND once, if set (the live system's tty1 sets it to report
        "tui-ready" to a watching host: docs/live.md, Boot time; never waited for, and its
        failure is only logged), then start following the disks: the watcher's first listing
        and the engine's import no longer hold up the first screen."""
        command = os.environ.pop("CLONEBAY_READY_COMMAND", "")
        if command:
            spawn(shlex.split(command))
        if self.watch_disks:
            self.watch_hotplug()

    def on_unmount(self) -> None:
        self.stop_watching.set()
        if self._services is not None:
            self._services.close_store()  # the image store chosen for the session is unmounted

    # --- flows -------------------------------------------------------------------------------

    def on_home_screen_chosen(self, message: HomeScreen.Chosen) -> None:
        if message.choice == "quit":
            self.exit(0)
            return
        from clonebay.tui import flows  # on first use: not imported before the first screen

        flow = flows.FLOWS.get(message.choice)
        if flow is None:
            return
        self.run_worker(
            flow(self, self.services), group="flow", exclusive=True, exit_on_error=False
        )

    # --- the one error handler --------------------------------------------------------------

    def show_error(self, error: BaseException) -> None:
        """Every worker error ends here: a modal with the error's title and text (none once
        the app is leaving: the terminal is gone, and a screen mounting as the app exits races
        its own teardown)."""
        if self.leaving:
            logging.getLogger(__name__).info("while leaving: %s", error)
            return
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
        from clonebay.tui.screens.disk_picker import DiskPickerScreen

        self.hotplug_changes += 1
        self.services.forget(*(d.path for d in (*change.removed, *change.changed)))
        for screen in self.screen_stack:
            if isinstance(screen, DiskPickerScreen):
                screen.disks_changed(list(change.disks))

    # --- quitting ---------------------------------------------------------------------------

    async def action_quit(self) -> None:
        from clonebay.tui.screens.ask import AskModal
        from clonebay.tui.screens.progress import ProgressScreen

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

    def on_terminal_gone(self, message: TerminalGone) -> None:
        logging.getLogger(__name__).info("leaving: %s", message.why)
        self.leave(message.code)

    def leave(self, code: int) -> None:
        """Quit without asking, as on quit: every job is cancelled (each job screen holds its
        cancel Event as ``cancel``) and waited for, then the app exits with ``code``."""
        if self.leaving:
            return
        self.leaving = True
        self.stop_watching.set()
        for screen in self.screen_stack:
            cancel = getattr(screen, "cancel", None)
            if isinstance(cancel, threading.Event):
                cancel.set()
        self.run_worker(self._exit_when_idle(code), group="leave", exit_on_error=False)

    async def _exit_when_idle(self, code: int) -> None:
        """Exit once no worker but the flows runs (a job's error is its screen's business)."""
        while busy := [w for w in self.workers if w.group not in BACKGROUND and w.is_running]:
            await asyncio.gather(*(w.wait() for w in busy), return_exceptions=True)
        self.exit(return_code=code)


def run_tui(disk_paths: list[str] | None = None, image_dir: str | None = None) -> int:
    """Start the TUI on this machine's disks plus ``disk_paths`` (image files or devices named
    on the command line, listed first); images are looked for and saved in ``image_dir``
    (default: the current folder). Returns the exit code."""
    logging.getLogger("clonebay").addHandler(logging.NullHandler())  # nothing on the screen
    folder = os.path.abspath(image_dir or os.getcwd())

    def make_services() -> Services:
        from clonebay.tui.services import Services

        return Services(disk_paths or [], image_dir=folder)

    app = ClonebayApp(make_services)
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
