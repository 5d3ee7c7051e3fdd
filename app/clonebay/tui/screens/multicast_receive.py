"""Multicast receive: waiting for a sender, then the restore's progress as frames arrive, then
the outcome. The receiver runs in a worker thread through engine.multicast.receive (as
``clonebay receive``); its status reaches the screen with call_from_thread.

Escape asks, then cancels (the target is left incomplete and says so). When the receiver is
done the screen shows the result and Continue dismisses it with the receiver's final status.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Button, Footer, Header, Label, ProgressBar, Static
from textual.worker import Worker, WorkerState

from clonebay.engine import Grow, RestoreOptions, multicast
from clonebay.net.protocol import derive_key
from clonebay.net.receiver import ReceiveConfig, ReceiveStatus
from clonebay.tui.screens.ask import AskModal
from clonebay.tui.screens.base import BaseScreen
from clonebay.units import human_size

WORDS = {
    "searching": "Waiting for a sender on the network…",
    "joined": "Joined the session; waiting for the sender to start…",
    "receiving": "Receiving and writing",
    "finishing": "Writing the partition table, flushing, checking…",
    "ok": "Done: the disk holds the image.",
    "failed": "Failed.",
}


class MulticastReceiveScreen(BaseScreen[ReceiveStatus | None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, target: str, passphrase: str, *, verify: bool = True, grow: Grow = Grow.PROPORTIONAL
    ) -> None:
        super().__init__()
        self.target = target
        self.passphrase = passphrase
        self.verify = verify
        self.grow = grow  # on a disk larger than the image's (the TUI's restore default)
        self.cancel = threading.Event()
        self.final: ReceiveStatus | None = None
        self.failed = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(Text(f"Multicast receive onto {self.target}"), classes="screen-heading")
        yield Static(WORDS["searching"], id="mc-state")
        yield ProgressBar(total=None, id="mc-bar", show_eta=False)
        yield Static("", id="mc-counters")
        yield Static("", id="mc-after")
        with Horizontal(classes="buttons"):
            yield Button("Cancel", id="cancel", variant="error")
        yield Footer()

    def on_mount(self) -> None:
        self.run_receive()

    def on_unmount(self) -> None:
        self.cancel.set()

    @work(thread=True, exit_on_error=False, group="multicast", name="receive")
    def run_receive(self) -> ReceiveStatus:
        from clonebay.engine.postcopy import PostcopyOptions, copy_facts, run_pass
        from clonebay.engine.postcopy.facts import from_manifest

        config = ReceiveConfig(key=derive_key(self.passphrase))
        seen: list[Any] = []  # the session's manifest
        _, status = multicast.receive(
            self.target,
            config,
            RestoreOptions(verify=self.verify, grow=self.grow),
            status=lambda s: self.app.call_from_thread(self.show, s),
            cancel=self.cancel,
            on_manifest=seen.append,
        )
        # the post-copy pass with its defaults (the fallback loader, boot data after a move)
        source = from_manifest(seen[0]) if seen else None
        report = run_pass(self.target, PostcopyOptions(), copy_facts(source, self.target))
        lines = [f"After the copy: {line}" for line in report.lines()]
        self.app.call_from_thread(self._after, lines)
        return status

    def _after(self, lines: list[str]) -> None:
        self.query_one("#mc-after", Static).update(Text("\n".join(lines)))

    def show(self, s: ReceiveStatus) -> None:
        words = WORDS.get(s.state, s.state)
        if s.state == "receiving" and s.total:
            words += f" {human_size(s.done)} of {human_size(s.total)} from {s.sender}"
        self.query_one("#mc-state", Static).update(words)
        if s.total:
            self.query_one("#mc-bar", ProgressBar).update(total=s.total, progress=s.done)
        c = s.counters
        self.query_one("#mc-counters", Static).update(
            f"datagrams {c.get('received', 0)}, repaired {c.get('repairs', 0)},"
            f" refused {c.get('rejected', 0)}"
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "receive":
            return
        if event.state is WorkerState.SUCCESS and isinstance(event.worker.result, ReceiveStatus):
            self.final = event.worker.result
            self.show(self.final)
            self._finished()
        elif event.state is WorkerState.ERROR:
            self.failed = True
            self.query_one("#mc-state", Static).update(WORDS["failed"])
            super().on_worker_state_changed(event)  # the app's error modal says why
            self._finished()

    def _finished(self) -> None:
        button = self.query_one("#cancel", Button)
        button.label, button.variant = "Continue", "primary"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_cancel()

    def action_cancel(self) -> None:
        if self.final is not None or self.failed or self.cancel.is_set():
            self.dismiss(self.final)
            return
        self.app.push_screen(
            AskModal(
                "Stop receiving?",
                f"{self.target} is left incomplete (without a partition table).",
                yes="Yes, stop",
                no="No, keep going",
            ),
            self._cancel_answered,
        )

    def _cancel_answered(self, stop: bool | None) -> None:
        if stop:
            self.cancel.set()
            self.dismiss(None)
