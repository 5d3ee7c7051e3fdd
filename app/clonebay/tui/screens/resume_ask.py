"""An interrupted save where the new image would go: resume it, start it again, or go back.

The save flow shows this when the image folder the technician picked holds an incomplete image
(a save killed, crashed, or cut short by an unplugged disk). What its checkpoint says is read
in a worker (Services.interrupted_save) and put plainly: the disk it was saved from, when it
began and when it stopped, how much of each region is saved, whether it was a rescue. Resume
goes on from the checkpoint; the save itself checks that the source is that disk (serial and
size) and its refusal is shown as it is. Start again replaces the incomplete image. Resume
has the focus when the image can be resumed (it loses nothing); Back otherwise.

AskResume is the modal without the save: an interrupted clone asks the same way
(screens/clone_resume_ask.py).
"""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Label, Static

from clonebay.model import Disk
from clonebay.tui.screens.base import BaseModal
from clonebay.tui.services import Services
from clonebay.tui.text import disk_name
from clonebay.units import human_size

if TYPE_CHECKING:
    from clonebay.engine.jobs import InterruptedSave


class ResumeChoice(enum.Enum):
    RESUME = "resume"  # go on from the checkpoint
    AGAIN = "again"  # replace the incomplete image with a new save


def when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds)) if seconds else "unknown"


def saved_lines(state: InterruptedSave) -> list[str]:
    """How much is saved, in all and region by region."""
    lines = [
        f"Saved: {human_size(state.saved_bytes)} of data"
        f" ({human_size(state.stored_bytes)} in the image so far)"
    ]
    for region in state.regions:
        if region.closed:
            lines.append(f"  {region.name}: complete, {human_size(region.saved_bytes)}")
        else:
            share = (
                f", {region.saved_bytes * 100 // region.used_bytes} %" if region.used_bytes else ""
            )
            lines.append(
                f"  {region.name}: {human_size(region.saved_bytes)} of"
                f" {human_size(region.used_bytes)} in use{share}; the save stopped here"
            )
    return lines


def question(state: InterruptedSave | None, image: str, source: Disk) -> str:
    """What the modal says of ``image`` (``state``: what its checkpoint holds)."""
    if state is None:
        return f"{image} is not an interrupted save (any more): go back and pick again."
    head = f"{image} holds a save that did not finish (it has no manifest.json)."
    again = f"Start again deletes this incomplete image and saves {source.path} anew."
    if not state.resumable:
        return f"{head}\nIt cannot be resumed: {state.problem}\n\n{again}"
    was = ", ".join(
        part
        for part in (
            state.source_path,
            state.source_model + (f" ({state.source_serial})" if state.source_serial else ""),
            human_size(state.source_size),
        )
        if part
    )
    lines = [
        head,
        "",
        f"Saved from: {was}",
        f"Begun: {when(state.begun)} (about); last checkpoint: {when(state.checkpointed)}",
        *saved_lines(state),
    ]
    if state.rescue:
        lines.append(f"It is a rescue: its map is {state.rescue_map}.")
    if state.source_size != source.size or (
        state.source_serial and source.serial and state.source_serial != source.serial
    ):
        lines.append(f"The disk you picked is not that one: {disk_name(source)}.")
    lines += [
        "",
        "Resume goes on from the last checkpoint and reads only what follows it; the source"
        " must be the disk it was saved from (its serial and size are checked).",
        again,
    ]
    return "\n".join(lines)


class Resumable(Protocol):
    """What a job left when it stopped: ``resumable`` when the engine will go on with it."""

    @property
    def resumable(self) -> bool: ...


S = TypeVar("S", bound=Resumable)


class AskResume(BaseModal[ResumeChoice | None], Generic[S]):
    """An interrupted job (a save's image, a clone's journal): read in a worker, put plainly,
    then Resume, Start again or Back. Dismisses with the choice, or None (Back, Escape);
    ``state``: what was read. A subclass says what it asks about (HEADING, ``read``,
    ``question``)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]
    HEADING = ""

    def __init__(self, reading: str) -> None:
        super().__init__()
        self.reading = reading  # the line shown while it is read
        self.state: S | None = None
        self.text = ""

    def read(self) -> S | None:
        """What the job left (in the worker thread)."""
        raise NotImplementedError

    def question(self, state: S | None) -> str:
        raise NotImplementedError

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.HEADING), classes="dialog-title")
            with VerticalScroll(id="resume-body"):  # the buttons stay in sight however long
                yield Static(Text(self.reading), id="resume-text")
            with Horizontal(classes="buttons"):
                yield Button("Back", id="back")
                yield Button("Start again", id="again", variant="error", disabled=True)
                yield Button("Resume", id="resume", variant="primary", disabled=True)

    def on_mount(self) -> None:
        self.query_one("#back", Button).focus()
        self.look()

    @work(thread=True, exit_on_error=False)
    def look(self) -> None:
        state = self.read()
        self.app.call_from_thread(self.show, state)

    def show(self, state: S | None) -> None:
        self.state = state
        self.text = self.question(state)
        self.query_one("#resume-text", Static).update(Text(self.text))
        if state is None:
            return
        self.query_one("#again", Button).disabled = False
        if state.resumable:
            resume = self.query_one("#resume", Button)
            resume.disabled = False
            resume.focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        choice = {"resume": ResumeChoice.RESUME, "again": ResumeChoice.AGAIN}
        self.dismiss(choice.get(event.button.id or ""))

    def action_back(self) -> None:
        self.dismiss(None)


class ResumeModal(AskResume["InterruptedSave"]):
    """An interrupted save in the image folder the technician picked."""

    HEADING = "An interrupted save is there"

    def __init__(self, services: Services, source: Disk, image: str) -> None:
        super().__init__(f"Reading what {image} holds…")
        self.services = services
        self.source = source
        self.image = image

    def read(self) -> InterruptedSave | None:
        return self.services.interrupted_save(self.image)

    def question(self, state: InterruptedSave | None) -> str:
        return question(state, self.image, self.source)
