"""Browse, step 4: copy the marked files and folders out of the image into a folder.

The technician types where (default: the folder the image is in): a disk's mounted folder, a
share path. Enter starts the copy in a thread worker (Services.extract: the partition is
mounted read-only for the copy and unmounted after, also on errors); the progress line names
the file being copied and counts files and bytes against the total. A file the image cannot
give back (a damaged frame: an I/O error for that file only) is named in the summary with the
reason, and the others are copied. Escape during the copy stops it between two files; after
it, Escape goes back to the folder tree, where the marks are kept.
"""

from __future__ import annotations

import os
import threading
import time
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header, Input, Label, Static

from clonebay.errors import CancelledError
from clonebay.tui.screens.base import BaseScreen
from clonebay.tui.services import (
    ExtractSummary,
    ExtractTick,
    ImageEntry,
    ImagePartition,
    Services,
)
from clonebay.units import human_size

SHOWN = 8  # marked paths listed by name; more are counted
TICK_EVERY = 0.1  # seconds between progress redraws: a folder of small files gives thousands


def counted(n: int, word: str) -> str:
    """ "1 file", "2 files"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def progress_text(tick: ExtractTick) -> Text:
    share = f" ({tick.bytes * 100 // tick.total}%)" if tick.total else ""
    size = f"{human_size(tick.bytes)} of {human_size(tick.total)}{share}"
    text = Text.assemble(
        ("Copying ", "bold"),
        f"{counted(tick.files, 'file')}, {size}",
        (f"  {tick.path}", "dim"),
    )
    if tick.failed:
        text.append(f"  {tick.failed} unreadable", style="#e5484d")
    return text


def summary_text(done: ExtractSummary) -> Text:
    """Files, folders and bytes copied; every file that could not be read, with the reason."""
    text = Text()
    title = "Done with errors" if done.failed else "Done"
    text.append(f"{title}: ", style="bold #e5484d" if done.failed else "bold #46a758")
    text.append(
        f"{counted(done.files, 'file')}, {counted(done.folders, 'folder')}"
        + (f", {counted(done.links, 'link')}" if done.links else "")
        + f" ({human_size(done.bytes)}) copied into {done.dest}.\n"
    )
    if done.failed:
        text.append(f"\n{len(done.failed)} could not be read from the image:\n", style="bold")
        for path, why in done.failed:
            text.append(f"  {path}: {why}\n", style="#e5484d")
    if done.image_errors:
        text.append("\nThe image says:\n", style="bold")
        for line in done.image_errors:
            text.append(f"  {line}\n", style="dim")
    return text


class ExtractScreen(BaseScreen[ExtractSummary | None]):
    """Dismisses with the summary of a finished copy, or None when nothing was copied."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back / stop")]

    def __init__(
        self,
        services: Services,
        image: ImageEntry,
        part: ImagePartition,
        paths: list[str],
        dest: str,
    ) -> None:
        super().__init__()
        self.services = services
        self.image = image
        self.part = part
        self.paths = paths
        self.dest = dest
        self.cancel = threading.Event()
        self.running = False
        self.summary: ExtractSummary | None = None
        self.last_tick = 0.0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(
            f"Extract {len(self.paths)} marked from {self.part.folder} of {self.image.name}",
            classes="screen-heading",
        )
        names = [f"  {p}" for p in self.paths[:SHOWN]]
        if len(self.paths) > SHOWN:
            names.append(f"  … and {len(self.paths) - SHOWN} more")
        yield Static("\n".join(names), id="extract-what")
        yield Label("Copy into this folder (a disk's mounted folder or a share path), Enter:")
        yield Input(self.dest, placeholder="/mnt/usb/recovered", id="extract-dest")
        yield Static("", id="extract-progress")
        yield Static("", id="extract-summary")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#extract-dest", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.running or self.summary is not None:
            return
        dest = os.path.expanduser(event.value.strip())
        if not dest:
            self.notify("Type the folder to copy into.", title="No folder", severity="warning")
            return
        self.dest = dest
        self.running = True
        self.cancel = threading.Event()
        event.input.disabled = True
        self.query_one("#extract-progress", Static).update("Mounting the partition…")
        self.copy(dest)

    @work(thread=True, group="extract", exit_on_error=False)
    def copy(self, dest: str) -> None:
        try:
            done = self.services.extract(
                self.image.path,
                self.part.region,
                self.paths,
                dest,
                sink=self._tick,
                cancel=self.cancel,
            )
        except CancelledError as exc:
            self.app.call_from_thread(self._stopped, exc.message)
            return
        except BaseException:
            self.app.call_from_thread(self._stopped, "")
            raise
        self.app.call_from_thread(self._done, done)

    def _tick(self, tick: ExtractTick) -> None:
        """From the worker thread, after each entry: redraw at most every TICK_EVERY s."""
        now = time.monotonic()
        if now - self.last_tick >= TICK_EVERY:
            self.last_tick = now
            self.app.call_from_thread(self._progress, tick)

    def _progress(self, tick: ExtractTick) -> None:
        if self.running and self.is_attached:
            self.query_one("#extract-progress", Static).update(progress_text(tick))

    def _done(self, done: ExtractSummary) -> None:
        self.running = False
        self.summary = done
        if not self.is_attached:
            return
        self.query_one("#extract-progress", Static).update("")
        self.query_one("#extract-summary", Static).update(summary_text(done))

    def _stopped(self, why: str) -> None:
        self.running = False
        if not self.is_attached:
            return
        self.query_one("#extract-progress", Static).update(Text(why, style="#d4a72c"))
        self.query_one("#extract-dest", Input).disabled = False

    def on_unmount(self) -> None:
        """The app is quitting (or the screen went away): a running copy stops after the file
        it is on, and the partition is unmounted; the app's exit waits for that, not for the
        whole copy."""
        self.cancel.set()

    def action_back(self) -> None:
        if self.running:
            self.cancel.set()
            self.query_one("#extract-progress", Static).update("Stopping after this file…")
            return
        self.dismiss(self.summary)
