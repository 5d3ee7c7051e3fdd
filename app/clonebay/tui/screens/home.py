"""Home: the first screen after boot. It names each job in a technician's words; jobs that are
not built yet are listed, greyed, so nobody wonders where multicast went. Choosing an entry
posts Home.Chosen, and the app runs that job's flow of screens."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from clonebay import __version__
from clonebay.tui.screens.base import BaseScreen

ENTRIES = (
    ("clone", "Clone disk", "copy one disk onto another, only the blocks in use", False),
    ("save", "Save image", "save a disk into a compressed image folder", False),
    ("restore", "Restore image", "write an image back onto a disk", False),
    ("disks", "Disks", "what is on each disk of this machine", False),
    ("multicast", "Multicast", "send an image to many machines at once, or receive one", False),
    ("browse", "Browse image", "look into an image and copy files out of it", False),
    ("quit", "Quit", "", False),
)


def _prompt(title: str, words: str, key: str) -> Text:
    text = Text()
    text.append(f" {key or ' '}  ", style="bold #d4a72c")
    text.append(f"{title:<15}", style="bold")
    text.append(words, style="dim")
    return text


KEYS = {
    "clone": "c",
    "save": "s",
    "restore": "r",
    "disks": "d",
    "multicast": "m",
    "browse": "b",
    "quit": "q",
}


class HomeScreen(BaseScreen[None]):
    """The menu of jobs."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "choose('clone')", "Clone"),
        Binding("s", "choose('save')", "Save"),
        Binding("r", "choose('restore')", "Restore"),
        Binding("d", "choose('disks')", "Disks"),
        Binding("m", "choose('multicast')", "Multicast"),
        Binding("b", "choose('browse')", "Browse"),
        Binding("q", "choose('quit')", "Quit"),
    ]

    class Chosen(Message):
        """The user picked a job from the menu."""

        def __init__(self, choice: str) -> None:
            super().__init__()
            self.choice = choice

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="home"):
            yield Static(
                Text.assemble(
                    ("clonebay ", "bold"),
                    (f"{__version__}\n", "dim"),
                    "Clone disks, save and restore images: only the blocks in use are copied,"
                    " and every copy is verified.",
                ),
                id="home-title",
            )
            yield OptionList(
                *(
                    Option(_prompt(title, words, KEYS.get(key, "")), id=key, disabled=disabled)
                    for key, title, words, disabled in ENTRIES
                ),
                id="home-menu",
            )
        yield Footer()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.post_message(self.Chosen(event.option.id))

    def action_choose(self, choice: str) -> None:
        self.post_message(self.Chosen(choice))
