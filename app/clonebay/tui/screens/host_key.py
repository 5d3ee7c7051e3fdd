"""Trust this SSH server? The host key fingerprints of a server seen for the first time in this
session, to compare with what the server's administrator reads out (``ssh-keygen -lf`` on the
server). "Refuse" is focused: a key accepted blindly is how a machine in the middle gets in.

The question comes from the engine (engine/stores/sftp.py, ``Access.accept_host_key``) in a
worker thread, while the store mounts; ``host_key_asker`` turns it into this modal on the app's
thread and waits for the answer (a threading.Event), giving up when the worker is cancelled.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static
from textual.worker import get_current_worker

from clonebay.tui.screens.base import BaseModal
from clonebay.tui.store_choice import AcceptKey

POLL = 0.25  # seconds between looks at the worker's cancel flag while the modal is up


class HostKeyModal(BaseModal[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "refuse", "Refuse")]

    def __init__(self, server: str, fingerprints: list[str]) -> None:
        super().__init__()
        self.server = server
        self.fingerprints = fingerprints

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="host-key"):
            yield Label(Text(f"Trust the SSH server {self.server}?"), classes="dialog-title")
            yield Static(
                Text(
                    "clonebay has not seen this server before. Its host key fingerprints:\n\n"
                    + "\n".join(f"  {fp}" for fp in self.fingerprints)
                    + "\n\nCompare them with the server's own (ssh-keygen -lf on the server)."
                    " Accept only if they match: a different key means another machine may be"
                    " answering in its place. The key is trusted until clonebay restarts."
                )
            )
            with Horizontal(classes="buttons"):
                yield Button("Refuse", id="refuse", variant="primary")
                yield Button("Accept", id="accept", variant="warning")

    def on_mount(self) -> None:
        self.query_one("#refuse", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "accept")

    def action_refuse(self) -> None:
        self.dismiss(False)


def host_key_asker(app: App[Any]) -> AcceptKey:
    """An ``accept_host_key`` for a store mounted in a worker thread of ``app``."""

    def accept(server: str, fingerprints: list[str]) -> bool:
        worker = get_current_worker()
        answered = threading.Event()
        answer: list[bool] = []

        def done(ok: bool | None) -> None:
            answer.append(bool(ok))
            answered.set()

        app.call_from_thread(app.push_screen, HostKeyModal(server, fingerprints), done)
        while not answered.wait(POLL):
            if worker.is_cancelled:
                return False
        return answer[0]

    return accept
