"""Unlock: the technician's key for one locked BitLocker or LUKS volume.

It names the volume (disk or image, partition, size, BitLocker or LUKS, its protectors) and,
for BitLocker, its recovery key ID in full, to look up where the owner's recovery password is
kept. The secret is typed into a masked field: a password, a 48-digit recovery password (told
apart by its shape: 8 groups of 6 digits, dashes optional) or a LUKS passphrase; or a startup
key (.BEK) or LUKS key file is named by its path.

Unlock tries it in a worker (BitLocker stretches a key for about half a second, a LUKS key slot
up to a few seconds): when it opens the volume the modal closes with True and the screen below
reads the disk again; when not, it stays and says why in the prober's words, with the field
emptied (the secret is not kept anywhere). Escape leaves the volume locked: copied whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from clonebay.errors import ClonebayError
from clonebay.tui.screens.base import BaseModal, BaseScreen, ResultT
from clonebay.tui.services import Services
from clonebay.tui.unlocking import LOOK_UP, LockedVolume, Secret, recovery_password
from clonebay.tui.widgets.locked_panel import LockedPanel
from clonebay.units import human_size

Attempt = Callable[[Secret], str]  # "" when the secret opened the volume, else why not
REDACT = 6  # a refusal is searched for the secret when it has this many characters (fewer: words)


class UnlockModal(BaseModal[bool]):
    """Dismisses True once a secret opened the volume, False when left locked."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "leave", "Leave locked")]

    def __init__(self, volume: LockedVolume, attempt: Attempt) -> None:
        super().__init__()
        self.volume = volume
        self.attempt = attempt
        self.trying = False
        self.said = ""  # the last refusal shown

    @property
    def bitlocker(self) -> bool:
        return self.volume.volume.fstype == "bitlocker"

    def compose(self) -> ComposeResult:
        v = self.volume
        with Vertical(classes="dialog", id="unlock-box"):
            yield Label(Text(f"Unlock {v.family} volume {v.name}"), classes="dialog-title")
            yield Static(self._ident(), id="unlock-ident")
            for key_id in v.recovery_key_ids:
                look_up = f"\n{LOOK_UP[0].upper()}{LOOK_UP[1:]}."
                yield Static(
                    Text.assemble(("Recovery key ID ", "bold"), (key_id, "bold"), look_up),
                    classes="unlock-recovery",
                )
            secret = "Password or 48-digit recovery password:" if self.bitlocker else "Passphrase:"
            yield Label(secret, classes="dialog-subtitle")
            yield Input(password=True, id="unlock-secret", placeholder="typed, not shown")
            file = "Or a startup key (.BEK file):" if self.bitlocker else "Or a key file:"
            yield Label(file, classes="dialog-subtitle")
            yield Input(id="unlock-file", placeholder="/path/to/the/file (optional)")
            yield Static("", id="unlock-status")
            with Horizontal(classes="buttons"):
                yield Button("Leave locked", id="leave")
                yield Button("Unlock", id="unlock", variant="primary")

    def _ident(self) -> Text:
        v = self.volume
        where = f"partition {v.number} at {human_size(v.start)}" if v.number else "the whole disk"
        label = f", label {v.volume.label!r}" if v.volume.label else ""
        facts = [
            (v.holder, v.disk),
            ("Volume", f"{where}, {human_size(v.volume.size)}, {v.family}{label}"),
            *(("", note) for note in v.volume.notes if not note.startswith("BitLocker recovery")),
        ]
        text = Text()
        for name, value in facts:
            text.append(f"{name:<8}", style="bold")
            text.append(f"{value}\n")
        text.rstrip()
        return text

    def on_mount(self) -> None:
        self.query_one("#unlock-secret", Input).focus()

    def secret(self) -> Secret:
        return Secret(
            self.query_one("#unlock-secret", Input).value,
            self.query_one("#unlock-file", Input).value.strip(),
        )

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "unlock-secret" or self.trying:
            return
        text = event.value
        if not text:
            hint = self.said
        elif self.bitlocker and recovery_password(text):
            hint = "48 digits: tried as the recovery password."
        elif self.bitlocker and text.replace("-", "").isdigit() and len(text) >= 6:
            digits = len(text.replace("-", ""))
            hint = f"{digits} digits: a recovery password has 48 (8 groups of 6)."
        else:
            hint = "Tried as the password." if self.bitlocker else ""
        self._status(hint)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_unlock()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "unlock":
            self.action_unlock()
        else:
            self.action_leave()

    def action_unlock(self) -> None:
        if self.trying:
            return
        secret = self.secret()
        if not secret.text and not secret.file:
            self._status("Type the key, or name a key file, first.")
            return
        if secret.text and secret.file:
            self._status("One at a time: the typed key or the file.")
            return
        self._busy(True)
        self._status(f"Trying the {secret.kind(self.volume.volume.fstype)}…")
        self.try_secret(secret)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def try_secret(self, secret: Secret) -> None:
        try:
            said = self.attempt(secret)
        except ClonebayError as exc:  # a key file that cannot be read, a .BEK that is not one
            said = exc.message
        if len(secret.text) >= REDACT and secret.text in said:  # probers never say it; be sure
            said = said.replace(secret.text, "(the key)")
        self.app.call_from_thread(self._tried, said)

    def _tried(self, said: str) -> None:
        self._busy(False)
        if not said:
            self.dismiss(True)
            return
        self.said = f"Not unlocked: {said}"
        self.query_one("#unlock-secret", Input).value = ""
        self._status(self.said, error=True)
        self.query_one("#unlock-secret", Input).focus()

    def _busy(self, busy: bool) -> None:
        self.trying = busy
        for widget in self.query(Input):
            widget.disabled = busy
        self.query_one("#unlock", Button).disabled = busy

    def _status(self, text: str, error: bool = False) -> None:
        self.query_one("#unlock-status", Static).update(
            Text(text, style="bold red" if error else "")
        )

    def action_leave(self) -> None:
        if not self.trying:  # the key being tried would be kept without the screen knowing
            self.dismiss(False)


class UnlockingScreen(BaseScreen[ResultT]):
    """A screen with a LockedPanel of a disk's volumes: its Unlock buttons and key u open the
    Unlock modal; ``unlocked`` runs once a key opened the volume (the session keeps the key and
    the disk's cached report was dropped: read it again)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("u", "unlock", "Unlock")]
    services: Services

    def unlocked(self) -> None:
        raise NotImplementedError

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "unlock":  # in the footer only while a volume is locked
            return self.query_one(LockedPanel).first_locked() is not None
        return True

    def action_unlock(self) -> None:
        volume = self.query_one(LockedPanel).first_locked()
        if volume is not None:
            self.unlock(volume)

    def on_locked_panel_unlock(self, event: LockedPanel.Unlock) -> None:
        self.unlock(event.volume)

    def unlock(self, volume: LockedVolume) -> None:
        def attempt(secret: Secret) -> str:
            return self.services.unlock(volume.disk, volume.number, secret)

        def answered(opened: bool | None) -> None:
            if opened:
                self.unlocked()

        self.app.push_screen(UnlockModal(volume, attempt), answered)
