"""What the Plan and the disk details say, in full, about the volumes that are not copied as
usual: each BitLocker or LUKS volume (locked and copied whole, with what would open it, or
unlocked and copied by its used blocks) and each hibernated Windows, with an Unlock button for
every locked one. The words wrap over the screen's width: a hibernated Windows' explanation is
a paragraph, and a recovery key ID must be read whole."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Static

from clonebay.tui.unlocking import LockedVolume


class UnlockButton(Button):
    """ "Unlock p1…": opens the Unlock modal for its volume."""

    def __init__(self, volume: LockedVolume) -> None:
        super().__init__(f"Unlock {volume.name}…", variant="warning", classes="unlock")
        self.volume = volume


class LockedPanel(Vertical):
    """Hidden while there is nothing to say; ``show`` fills it."""

    DEFAULT_CSS = """
    LockedPanel { height: auto; margin: 1 1 0 1; }
    LockedPanel > Static { height: auto; }
    LockedPanel > Horizontal { height: auto; }
    LockedPanel UnlockButton { margin-right: 2; }
    """

    class Unlock(Message):
        """The technician asked to unlock ``volume``."""

        def __init__(self, volume: LockedVolume) -> None:
            super().__init__()
            self.volume = volume

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.volumes: tuple[LockedVolume, ...] = ()

    def compose(self) -> ComposeResult:
        yield Static("", classes="locked-text")
        yield Horizontal(classes="locked-buttons")

    def on_mount(self) -> None:
        self.display = False

    def show(self, volumes: Sequence[LockedVolume], notes: Sequence[str] = ()) -> None:
        """The encrypted ``volumes`` and the other ``notes`` (a hibernated Windows' words)."""
        self.volumes = tuple(volumes)
        lines = [line for v in self.volumes for line in v.lines()] + list(notes)
        self.query_one(".locked-text", Static).update(Text("\n".join(lines)))
        buttons = self.query_one(".locked-buttons", Horizontal)
        buttons.remove_children()
        locked = [UnlockButton(v) for v in self.volumes if v.locked]
        buttons.mount_all(locked)
        buttons.display = bool(locked)
        self.display = bool(lines)

    def first_locked(self) -> LockedVolume | None:
        return next((v for v in self.volumes if v.locked), None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if isinstance(event.button, UnlockButton):
            event.stop()
            self.post_message(self.Unlock(event.button.volume))
