"""Progress: the job running, in a worker thread, through the same engine calls as the CLI.

The engine's progress callbacks arrive in the worker thread and are handed to the screen with
call_from_thread; the meter shows the overall and per-region bars, speed, time left and the
slowest stage; the log pane gets a line per phase and region and every external command the
engine runs (the "clonebay" logger). Cancel asks again ("No" focused), then sets the job's cancel
Event; the engine stops within one chunk and says what it left behind.

The screen dismisses with an Outcome: at once when the job succeeds or is cancelled; after a
failure it stays, showing "Failed", while the error modal explains, and Continue moves on.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Button, Footer, Header, Label, Log, Static
from textual.worker import Worker, WorkerState

from clonebay.errors import CancelledError
from clonebay.tui.jobs import JobRequest, Outcome, Tick, failed
from clonebay.tui.screens.ask import AskModal
from clonebay.tui.screens.base import BaseScreen
from clonebay.tui.services import Services
from clonebay.tui.text import region_name
from clonebay.tui.widgets.job_meter import JobMeter

ENGINE_LOGGER = "clonebay"
TARGET_STATES = {
    "waiting": "waiting",
    "writing": "writing",
    "finishing": "tables, verify, fixups",
    "done": "complete",
    "failed": "FAILED: incomplete",
}
STATE_MARKS = {"done": ("✔", "#46a758"), "failed": ("✘", "bold #e5484d"), "writing": ("▶", "")}


class _QueueHandler(logging.Handler):
    """Engine log records (from any thread) into a queue the screen drains on a timer."""

    def __init__(self, lines: queue.SimpleQueue[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.put(record.getMessage())


class ProgressScreen(BaseScreen[Outcome]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel job")]

    def __init__(self, services: Services, request: JobRequest) -> None:
        super().__init__()
        self.services = services
        self.request = request
        self.cancel = threading.Event()
        self.failure: Outcome | None = None
        self.last_region = ""
        self.last_phase = ""
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._handler = _QueueHandler(self._lines)
        self._old_level = logging.NOTSET
        self.states: dict[str, str] = {}  # target -> its state (several targets)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(Text(self.request.title), classes="screen-heading")
        yield JobMeter()
        if self.request.also:
            yield Static(self._targets_text(), id="job-targets")
        yield Log(id="job-log", highlight=False)
        with Horizontal(classes="buttons"):
            yield Button("Cancel", id="cancel", variant="error")
        yield Footer()

    def on_mount(self) -> None:
        logger = logging.getLogger(ENGINE_LOGGER)
        self._old_level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self._handler)
        self.set_interval(0.25, self._drain_log)
        self.log_line(f"started: {self.request.title}")
        self.run_job()

    def on_unmount(self) -> None:
        self.cancel.set()  # the screen going away (the app quitting) never abandons a job
        logger = logging.getLogger(ENGINE_LOGGER)
        logger.removeHandler(self._handler)
        logger.setLevel(self._old_level)

    @work(thread=True, exit_on_error=False, group="job", name="job")
    def run_job(self) -> Outcome:
        if self.request.also:  # several targets: each one's state is shown
            return self.services.run(
                self.request, self._tick_from_worker, self.cancel, self._state_from_worker
            )
        return self.services.run(self.request, self._tick_from_worker, self.cancel)

    def _state_from_worker(self, target: str, state: str) -> None:
        self.app.call_from_thread(self.show_state, target, state)

    def show_state(self, target: str, state: str) -> None:
        """One target's state changed (writing, finishing, done, failed)."""
        self.states[target] = state
        self.query_one("#job-targets", Static).update(self._targets_text())
        self.log_line(f"{target}: {TARGET_STATES.get(state, state)}")

    def _targets_text(self) -> Text:
        text = Text()
        for target in self.request.targets:
            state = self.states.get(target, "waiting")
            mark, style = STATE_MARKS.get(state, ("·", ""))
            text.append(f" {mark} {target:<28} {TARGET_STATES.get(state, state)}\n", style=style)
        return text

    def _tick_from_worker(self, tick: Tick) -> None:
        self.app.call_from_thread(self.show_tick, tick)

    def show_tick(self, tick: Tick) -> None:
        self.query_one(JobMeter).show_tick(tick)
        if tick.phase != self.last_phase:
            self.last_phase = tick.phase
            self.log_line(f"{tick.phase.lower()}…")
        if tick.region and tick.region != self.last_region:
            self.last_region = tick.region
            self.log_line(f"  region {region_name(tick.region)}")

    def log_line(self, line: str) -> None:
        self.query_one(Log).write_line(line)

    def _drain_log(self) -> None:
        for _ in range(1000):  # bounded per tick; the rest comes at the next
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return
            self.log_line(line)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "job":
            return
        self._drain_log()
        if event.state is WorkerState.SUCCESS and isinstance(event.worker.result, Outcome):
            self.query_one(JobMeter).finish("Done")
            self.log_line("done")
            self.dismiss(event.worker.result)
        elif event.state is WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            cancelled = self.cancel.is_set() and isinstance(error, CancelledError)
            outcome = failed(self.request, error, cancelled)
            first = outcome.details[0] if outcome.details else ""
            self.log_line(f"{outcome.error_title.lower()}: {first}")
            if cancelled:  # the user asked for it: no error modal
                event.prevent_default()
                self.dismiss(outcome)
                return
            self.failure = outcome
            self.query_one(JobMeter).finish("Failed")
            button = self.query_one("#cancel", Button)
            button.label = "Continue"
            button.variant = "primary"
            button.disabled = False

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_cancel()

    def action_cancel(self) -> None:
        if self.failure is not None:
            self.dismiss(self.failure)
            return
        if self.cancel.is_set():
            return
        what = "image" if self.request.kind.value == "save" else "target"
        self.app.push_screen(
            AskModal(
                "Cancel the job?",
                f"The job stops within a few seconds and the {what} is left incomplete"
                " (it will say so: it cannot be mistaken for a good copy).",
                yes="Yes, stop it",
                no="No, keep going",
            ),
            self._cancel_answered,
        )

    def _cancel_answered(self, stop: bool | None) -> None:
        if stop and self.failure is None and not self.cancel.is_set():
            self.cancel.set()
            self.log_line("cancelling…")
            self.query_one("#cancel", Button).disabled = True
