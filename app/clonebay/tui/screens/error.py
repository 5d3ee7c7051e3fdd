"""The error modal: every error a worker raises ends here, with the error's title and its text
(which says what went wrong, where, and what to do). Errors clonebay did not expect say so and
show the exception, so a technician can report it."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Label, Static

from clonebay.errors import ClonebayError
from clonebay.tui.screens.base import BaseModal


def error_words(error: BaseException) -> tuple[str, str]:
    """(title, text) of any exception."""
    if isinstance(error, ClonebayError):
        return error.title, error.message
    return (
        "Internal error",
        f"clonebay did not expect this: {type(error).__name__}: {error}\n"
        "Nothing more was done. Please report it with the steps that led here.",
    )


class ErrorModal(BaseModal[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("enter", "close", "Close"),
    ]

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.title_text, self.text = error_words(error)

    def compose(self) -> ComposeResult:
        with Vertical(id="error-box", classes="dialog error"):
            yield Label(Text(self.title_text), classes="dialog-title")
            with VerticalScroll(id="error-text"):
                yield Static(Text(self.text))
            with Horizontal(classes="buttons"):
                yield Button("OK", id="ok", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#ok", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
