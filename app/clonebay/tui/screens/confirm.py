"""Confirm: the last stop before a disk is overwritten.

It names the target the way its label does (model, serial, size, bus, device) and lists what is
on it now, read fresh by the prober. "No" has the focus. To go on, the technician types the last
four characters of the disk's serial number, which they can read off the drive, or "yes" for an
image file or a device without a serial; only then does "Yes, overwrite" work. Several targets
of one job (written from one read) are listed together, each with model, serial, size and
what is on it, and "yes" is typed once for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from clonebay.errors import ClonebayError
from clonebay.model import Disk
from clonebay.tui.screens.base import BaseModal
from clonebay.tui.services import Services
from clonebay.tui.text import contents_lines, serial_tail
from clonebay.units import human_size


def expected_answer(disk: Disk) -> str:
    """What must be typed: the serial's last four characters, or "YES"."""
    if disk.serial and disk.transport not in ("file", "loop"):
        return serial_tail(disk.serial)
    return "YES"


class ConfirmModal(BaseModal[bool]):
    """Dismisses True only after the right answer was typed and Yes pressed."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "no", "No")]

    def __init__(
        self, services: Services, disk: Disk, action: str, also: Sequence[Disk] = ()
    ) -> None:
        super().__init__()
        self.services = services
        self.disk = disk
        self.also = tuple(also)  # more targets of the same job: listed, and "yes" is typed
        self.action = action
        self.answer = "YES" if self.also else expected_answer(disk)
        self.contents: list[str] = []  # what is on the disk now, once read

    @property
    def disks(self) -> tuple[Disk, ...]:
        return (self.disk, *self.also)

    def compose(self) -> ComposeResult:
        d = self.disk
        with Vertical(id="confirm-box", classes="dialog"):
            if self.also:
                title = f"{self.action}: everything on these {len(self.disks)} disks will be lost"
            else:
                title = f"{self.action}: everything on this disk will be lost"
            yield Label(Text(title), classes="dialog-title")
            ident = Text()
            if self.also:
                for disk in self.disks:
                    ident.append(f"{disk.path:<14}", style="bold")
                    ident.append(
                        f"{disk.model or 'unknown'}, serial {disk.serial or 'none'},"
                        f" {human_size(disk.size)}, {disk.transport or '-'}\n"
                    )
            for name, value in (
                ()
                if self.also
                else (
                    ("Model", d.model or "unknown"),
                    ("Serial", d.serial or "none"),
                    ("Size", f"{human_size(d.size)} ({d.size} bytes)"),
                    ("Bus", d.transport or "-"),
                    ("Device", d.path),
                )
            ):
                ident.append(f"{name:<8}", style="bold")
                ident.append(f"{value}\n")
            yield Static(ident, id="confirm-ident")
            yield Label("On it now:", classes="dialog-subtitle")
            yield Static(Text("reading…"), id="confirm-contents")
            if self.answer == "YES":
                prompt = 'Type "yes" to go on:'
            else:
                prompt = "Type the last 4 characters of its serial number to go on:"
            yield Label(prompt)
            yield Input(
                placeholder=self.answer.lower() if self.answer == "YES" else "····",
                id="confirm-input",
                max_length=8,
            )
            with Horizontal(classes="buttons"):
                yield Button("No", id="no", variant="primary")
                yield Button("Yes, overwrite", id="yes", variant="error", disabled=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()
        self.read_contents()

    @work(thread=True, exit_on_error=False)
    def read_contents(self) -> None:
        lines: list[str] = []
        for disk in self.disks:
            try:
                found = contents_lines(self.services.inspect(disk.path, fresh=True))
            except ClonebayError as exc:
                found = [f"cannot read it: {exc.message}"]
            lines += [f"{disk.path}:", *(f"  {line}" for line in found)] if self.also else found
        self.app.call_from_thread(self._contents, lines)

    def _contents(self, lines: list[str]) -> None:
        self.contents = lines
        self.query_one("#confirm-contents", Static).update(Text("\n".join(lines)))

    def _matches(self, value: str) -> bool:
        return value.strip().upper() == self.answer

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#yes", Button).disabled = not self._matches(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self._matches(event.value):
            self.dismiss(True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "yes" and self._matches(self.query_one(Input).value):
            self.dismiss(True)
        else:
            self.dismiss(False)

    def action_no(self) -> None:
        self.dismiss(False)
