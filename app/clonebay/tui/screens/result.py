"""Result: how the job ended, in plain words: done, failed or cancelled, the verify outcome, the
figures, any warnings, and what to do next (e.g. remove the source disk before the first boot,
since a clone carries the same IDs).

When the plan asked to power off when done and the job went well, a countdown runs first: any key
or the button keeps the machine on; at zero Services.power_off runs and the app exits (the
system is going down). A failed or cancelled job never powers off: its message must be read.

A save or a clone that stopped after a checkpoint (Outcome.resume_offer) gets a Resume button:
the screen dismisses with True and the flow runs the job again from its checkpoint."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Footer, Header, Label, Static

from clonebay.tui.jobs import Outcome
from clonebay.tui.screens.base import BaseScreen
from clonebay.tui.services import Services

MARKS = {
    "done": ("✔", "#46a758"),
    "errors": ("▲", "#d4a72c"),  # done with errors: a rescue left unreadable sectors
    "failed": ("✘", "#e5484d"),
    "cancelled": ("■", "#d4a72c"),
}


def result_text(outcome: Outcome) -> Text:
    text = Text()
    for target in outcome.targets:  # a job with several targets: each one's end first
        text.append(f"{target.text}\n", style="#46a758" if target.ok else "bold #e5484d")
    if outcome.targets:
        text.append("\n")
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


class ResultScreen(BaseScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "done", "Home"),
        Binding("enter", "done", "Home"),
    ]

    def __init__(self, outcome: Outcome, power_off: Services | None = None) -> None:
        super().__init__()
        self.outcome = outcome
        self.power_off = power_off
        self.countdown = power_off.power_off_delay if power_off else 0

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
        yield Static("", id="power-off-status")
        with Horizontal(classes="buttons"):
            if self.power_off is not None:
                yield Button("Stay on", id="stay", variant="warning")
            if self.outcome.resume_offer:
                yield Button("Resume", id="resume", variant="warning")
            yield Button("Back to the menu", id="done", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        if self.power_off is not None:
            self.query_one("#stay", Button).focus()
            self._tick()
            self.timer = self.set_interval(1, self._tick)
        else:
            self.query_one("#done", Button).focus()

    def _tick(self) -> None:
        status = self.query_one("#power-off-status", Static)
        if self.power_off is None:
            return
        if self.countdown <= 0:
            self.timer.stop()
            status.update(Text("Powering off…", style="bold"))
            self._power_off(self.power_off)
            return
        status.update(
            Text(f"Powering off in {self.countdown} s. Press any key to stay on.", style="bold")
        )
        self.countdown -= 1

    @work(thread=True, exit_on_error=False)
    def _power_off(self, services: Services) -> None:
        services.power_off()
        self.app.call_from_thread(self.app.exit, 0)

    def _stay(self) -> bool:
        """Stop the countdown; True when there was one to stop."""
        if self.power_off is None or self.countdown <= 0:
            return False
        self.power_off = None
        self.timer.stop()
        self.query_one("#power-off-status", Static).update(Text("Staying on."))
        self.query_one("#stay", Button).remove()
        self.query_one("#done", Button).focus()
        return True

    def on_key(self, event: events.Key) -> None:
        if self._stay():  # this key only stops the countdown
            event.stop()
            event.prevent_default()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "stay":
            self._stay()
        else:
            self.dismiss(event.button.id == "resume")

    def action_done(self) -> None:
        if not self._stay():
            self.dismiss(False)
