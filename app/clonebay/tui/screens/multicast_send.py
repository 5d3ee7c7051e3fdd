"""Multicast send: the session key to read out, every receiver as it joins, its progress and its
outcome. The session runs in a worker thread through engine.multicast.send (as ``clonebay
send``); its status snapshots reach the screen with call_from_thread twice a second.

"Start now" starts without waiting for more receivers (the operator's word); Escape asks, then
cancels (receivers are left incomplete, and say so). When every receiver has finished, the
table stays with each one's outcome and Continue dismisses the screen with the final status.
"""

from __future__ import annotations

import threading
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Footer, Header, Label, Static
from textual.worker import Worker, WorkerState

from clonebay.engine import multicast
from clonebay.net.protocol import derive_key
from clonebay.net.sender import SendConfig, SessionStatus
from clonebay.tui.screens.ask import AskModal
from clonebay.tui.screens.base import BaseScreen
from clonebay.units import human_rate, human_size

STATES = {
    "joined": "joined",
    "ready": "ready",
    "running": "receiving",
    "ok": "done",
    "failed": "FAILED",
    "lost": "LOST",
}


class MulticastSendScreen(BaseScreen[SessionStatus | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "start_now", "Start now"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(
        self, source: str, passphrase: str, *, min_receivers: int = 1, rate: float = 40e6
    ) -> None:
        super().__init__()
        self.source = source
        self.passphrase = passphrase
        self.min_receivers = min_receivers
        self.rate = rate
        self.start = threading.Event()
        self.cancel = threading.Event()
        self.final: SessionStatus | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(Text(f"Multicast {self.source}"), classes="screen-heading")
        yield Static(
            Text.assemble(
                "Session key: ",
                (self.passphrase, "bold"),
                "\nType it on every receiver (clonebay receive, or Multicast > Receive).",
            ),
            id="mc-key",
        )
        yield Static("Waiting for receivers…", id="mc-status")
        table: DataTable[str] = DataTable(id="mc-receivers", cursor_type="row")
        table.add_columns("#", "address", "name", "state", "progress", "message")
        yield table
        with Horizontal(classes="buttons"):
            yield Button("Start now", id="start", variant="primary")
            yield Button("Cancel", id="cancel", variant="error")
        yield Footer()

    def on_mount(self) -> None:
        self.run_session()

    def on_unmount(self) -> None:
        self.cancel.set()

    @work(thread=True, exit_on_error=False, group="multicast", name="send")
    def run_session(self) -> SessionStatus:
        config = SendConfig(
            key=derive_key(self.passphrase), rate=self.rate, min_receivers=self.min_receivers
        )
        return multicast.send(
            self.source,
            config,
            status=lambda s: self.app.call_from_thread(self.show, s),
            start=self.start,
            cancel=self.cancel,
        )

    def show(self, s: SessionStatus) -> None:
        frac = s.position / s.datagrams if s.datagrams else 0.0
        done = sum(1 for r in s.receivers if r.finished)
        head = (
            f"{s.state}: {len(s.receivers)} receiver(s), {done} finished; first pass"
            f" {frac * 100:.0f}%, {s.repairs} datagrams repeated, {human_rate(s.rate)}"
        )
        self.query_one("#mc-status", Static).update(head)
        table: DataTable[str] = self.query_one("#mc-receivers", DataTable)
        table.clear()
        for r in s.receivers:
            pct = f"{r.done * 100 // r.total}% of {human_size(r.total)}" if r.total else "-"
            table.add_row(
                str(r.number), r.address, r.name, STATES.get(r.state, r.state), pct, r.message
            )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "send":
            return
        if event.state is WorkerState.SUCCESS and isinstance(event.worker.result, SessionStatus):
            self.final = event.worker.result
            self.show(self.final)
            ok = sum(1 for r in self.final.receivers if r.state == "ok")
            self.query_one("#mc-status", Static).update(
                f"Finished: {ok} of {len(self.final.receivers)} receivers have a good copy."
            )
            self._finished()
        elif event.state is WorkerState.ERROR:
            super().on_worker_state_changed(event)  # the app's error modal says what happened
            self._finished()

    def _finished(self) -> None:
        self.query_one("#start", Button).display = False
        button = self.query_one("#cancel", Button)
        button.label, button.variant = "Continue", "primary"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start_now()
        else:
            self.action_cancel()

    def action_start_now(self) -> None:
        self.start.set()

    def action_cancel(self) -> None:
        if self.final is not None or self.cancel.is_set():
            self.dismiss(self.final)
            return
        self.app.push_screen(
            AskModal(
                "Stop the session?",
                "Receivers that are not done yet stop with an incomplete disk (it says so).",
                yes="Yes, stop",
                no="No, keep sending",
            ),
            self._cancel_answered,
        )

    def _cancel_answered(self, stop: bool | None) -> None:
        if stop:
            self.cancel.set()
            self.dismiss(None)
