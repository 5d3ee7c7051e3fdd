"""Where to save: the folder (a USB stick, a network share) and the new image's name.

The name is proposed from the source disk; an image that already exists is never overwritten
(pick another name). An incomplete image (a save that stopped: it has no manifest.json) may be
picked, and is proposed when it has the proposed name: the save flow then asks whether to
resume it or start it again (screens/resume_ask.py). The free space of the folder is shown
next to what the source holds, so a stick that is too small is seen before the job starts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Footer, Header, Input, Label, Static

from clonebay.model import Disk
from clonebay.tui.screens.base import BaseScreen
from clonebay.tui.services import Services
from clonebay.tui.text import disk_name
from clonebay.units import human_size


@dataclass(frozen=True)
class SaveTarget:
    """The image to save into; ``interrupted``: it is an incomplete image already."""

    path: str
    interrupted: bool = False


def incomplete_image(path: str) -> bool:
    """An image folder whose save did not finish: packs, no manifest."""
    return os.path.isdir(os.path.join(path, "packs")) and not os.path.exists(
        os.path.join(path, "manifest.json")
    )


def proposed_name(disk: Disk, folder: str) -> str:
    """ "<model or file name>.image", with -2, -3... if that exists in ``folder`` as anything
    but an incomplete image."""
    base = disk.model.removeprefix("image file ").removeprefix("loop: ") or disk.path
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.basename(base.rstrip("/"))).strip("-.")
    base = (base.removesuffix(".img") or "disk") + ".image"

    def usable(name: str) -> bool:
        path = os.path.join(folder, name)
        return not os.path.exists(path) or incomplete_image(path)

    name, n = base, 2
    while not usable(name) and n < 1000:
        name = base.replace(".image", f"-{n}.image")
        n += 1
    return name


class SaveTargetScreen(BaseScreen[SaveTarget | None]):
    """Dismisses with the image to save into, or None on Escape."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, services: Services, source: Disk, folder: str) -> None:
        super().__init__()
        self.services = services
        self.source = source
        self.folder = folder

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("Where should the image go?", classes="screen-heading")
        yield Label(Text(f"Source: {disk_name(self.source)}"), classes="screen-subheading")
        with Vertical(id="save-form"):
            yield Label("Folder")
            yield Input(self.folder, id="save-folder")
            yield Label("Image name")
            yield Input(proposed_name(self.source, self.folder), id="save-name")
            yield Static("", id="save-space")
            with Horizontal(classes="buttons"):
                yield Button("Back", id="back")
                yield Button("Continue", id="continue", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#save-name", Input).focus()
        self.measure(self.folder)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def measure(self, folder: str) -> None:
        try:
            free = self.services.free_space(folder)
        except OSError as exc:
            text = f"cannot use {folder}: {exc.strerror}"
        else:
            text = (
                f"Free in {folder}: {human_size(free)}. The source disk is"
                f" {human_size(self.source.size)}; only its used blocks are saved, compressed."
            )
        self.app.call_from_thread(self.query_one("#save-space", Static).update, Text(text))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "save-folder":
            self.measure(event.value.strip() or ".")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._continue()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "continue":
            self._continue()
        else:
            self.dismiss(None)

    def _continue(self) -> None:
        folder = self.query_one("#save-folder", Input).value.strip() or "."
        name = self.query_one("#save-name", Input).value.strip()
        path = os.path.join(folder, name)
        why = ""
        if not name or "/" in name:
            why = "give the image a name (no '/')"
        elif not os.path.isdir(folder):
            why = f"{folder} is not a folder"
        elif os.path.exists(path) and not incomplete_image(path):
            why = f"{name} already exists in {folder}: pick another name"
        if why:
            self.notify(why, title="Cannot save there", severity="warning")
            return
        self.dismiss(SaveTarget(path, interrupted=os.path.exists(path)))

    def action_back(self) -> None:
        self.dismiss(None)
