"""Result: how the job ended, in plain words: done, failed or cancelled, the verify outcome, the
figures, any warnings, and what to do next (e.g. remove the source disk before the first boot,
since a clone carries the same IDs)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Footer, Header, Label, Static

from clonebay.tui.jobs import Outcome
from clonebay.tui.screens.base import BaseScreen

MARKS = {"done": ("✔", "#46a758"), "failed": ("✘", "#e5484d"), "cancelled": ("■", "#d4a72c")}


def result_text(outcome: Outcome) -> Text:
    text = Text()
    for line in outcome.details:
        text.append(f"{line}\n")
    if outcome.verify:
        style = "#46a758" if outcome.verify.startswith("Verified") else ""
        text.append(f"\n{outcome.verify}\n", style=style)
    for warning in outcome.warnings:
        text.append(f"warning: {warning}\n", style="#d4a72c")
    if outcome.next_step:
        text.append("\nWhat next\n", style="bold")
        text.append(f"{outcome.next_step}\n")
    return text


class ResultScreen(BaseScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "done", "Home"),
        Binding("enter", "done", "Home"),
    ]

    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome

    def compose(self) -> ComposeResult:
        mark, colour = MARKS.get(self.outcome.status, ("?", ""))
        yield Header()
        yield Label(
            Text(f"{mark} {self.outcome.headline}", style=f"bold {colour}"),
            classes="screen-heading",
            id="result-headline",
        )
        with VerticalScroll(id="result-body"):
            yield Static(result_text(self.outcome), id="result-text")
        with Horizontal(classes="buttons"):
            yield Button("Back to the menu", id="done", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#done", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_done(self) -> None:
        self.dismiss(None)
