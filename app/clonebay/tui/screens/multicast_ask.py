"""The two questions of the multicast flow: send or receive, and (on a receiver) the session
key shown on the sender."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from clonebay.tui.screens.base import BaseModal


class MulticastModeModal(BaseModal[str | None]):
    """ "send", "receive", or None (back)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text("Multicast"), classes="dialog-title")
            yield Static(
                "Send an image to many machines at once, or receive one onto a disk of this"
                " machine. Receivers may join before the start or while it runs."
            )
            with Horizontal(classes="buttons"):
                yield Button("Send an image", id="send", variant="primary")
                yield Button("Receive onto a disk", id="receive")
                yield Button("Back", id="back")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "back" else event.button.id)

    def action_back(self) -> None:
        self.dismiss(None)


class SessionKeyModal(BaseModal[str | None]):
    """The session key as typed (case, spaces and dashes do not matter), or None (back)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text("Session key"), classes="dialog-title")
            yield Static("Type the key the sender shows (e.g. 7k2m-q9xa-h4tp-3rwe).")
            yield Input(placeholder="session key", id="mc-key-input")
            with Horizontal(classes="buttons"):
                yield Button("Join", id="join", variant="primary")
                yield Button("Back", id="back")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._answer(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "back":
            self.dismiss(None)
        else:
            self._answer(self.query_one(Input).value)

    def _answer(self, value: str) -> None:
        if value.strip(" -"):
            self.dismiss(value)

    def action_back(self) -> None:
        self.dismiss(None)
