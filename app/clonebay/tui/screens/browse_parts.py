"""Browse, step 2: the partitions of the chosen image.

An image keeps each partition as a region with its own index, so one partition can be mounted
read-only and walked without reading the others (docs/browse.md). This screen lists them with
filesystem, label and size. Partitions without files — swap, Microsoft reserved, raw or unknown
data — are listed greyed with the reason and cannot be picked: their bytes are in the image, but
there is no folder tree to walk. A BitLocker or LUKS partition opens with its key: a key the
session already has (given in a Plan, the disk details or an earlier browse) is tried first,
else the Unlock modal asks for one (screens/unlock.py), naming the recovery key ID the image
recorded; the partition is then read through its plaintext, read-only.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Label, Static

from clonebay.tui.screens.base import BaseScreen
from clonebay.tui.screens.unlock import UnlockModal
from clonebay.tui.services import ImageEntry, ImagePartition, Services
from clonebay.tui.unlocking import FAMILIES, LockedVolume, Secret, image_volume
from clonebay.units import human_size

COLUMNS = ("Partition", "Filesystem", "Label", "Size", "Files")


def no_files_reason(part: ImagePartition) -> str:
    """Why a partition has no folder tree, in a technician's words ("" when it has one)."""
    if part.mountable:
        return ""
    fstype = part.fstype or "unknown"
    if fstype == "swap":
        return "swap space: no files"
    if fstype == "empty-msr":
        return "Microsoft reserved: no files"
    if fstype == "crypto_LUKS":
        return "encrypted: not opened"
    if fstype in ("unknown", "raw"):
        return "raw or unknown data: no files"
    return f"{fstype}: no driver to read its files"


class BrowsePartsScreen(BaseScreen[ImagePartition | None]):
    """Dismisses with the partition to walk, or None on Escape."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, services: Services, image: ImageEntry) -> None:
        super().__init__()
        self.services = services
        self.image = image
        self.parts: dict[str, ImagePartition] = {}
        self.summary = "reading the image…"  # the status line under the table

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(f"Pick the partition of {self.image.name} to open.", classes="screen-heading")
        yield Static(self.image.path, classes="screen-subheading")
        yield DataTable(id="browse-parts", cursor_type="row", zebra_stripes=True)
        yield Static("reading the image…", id="browse-parts-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#browse-parts", DataTable)
        table.add_columns(*COLUMNS)
        table.focus()
        self.load()

    @work(thread=True, exclusive=True, group="partitions", exit_on_error=False)
    def load(self) -> None:
        parts = self.services.partitions(self.image.path)
        self.app.call_from_thread(self._show, parts)

    def _show(self, parts: list[ImagePartition]) -> None:
        if not self.is_attached:
            return  # the technician went back before the image was read
        table: DataTable[Text] = self.query_one("#browse-parts", DataTable)
        self.parts = {p.region: p for p in parts}
        for part in parts:
            why = no_files_reason(part)
            style = "dim" if why else ""
            opens = (
                "locked: Enter asks for its key" if part.fstype in FAMILIES else "✔ open with Enter"
            )
            table.add_row(
                Text(part.folder, style=style or "bold"),
                Text(part.fstype or "unknown", style=style),
                Text(part.label, style=style),
                Text(human_size(part.size), style=style, justify="right"),
                Text(why or opens, style="dim" if why else "#46a758"),
                key=part.region,
            )
        openable = sum(1 for p in parts if p.mountable)
        self.summary = (
            f"{len(parts)} partitions, {openable} with files. Opening one mounts it read-only"
            " for a moment: the image is never changed."
        )
        self._status(self.summary)
        first = next((i for i, p in enumerate(parts) if p.mountable), 0)
        table.move_cursor(row=first)

    def highlighted(self) -> str | None:
        """The region under the cursor."""
        table: DataTable[Text] = self.query_one("#browse-parts", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None else str(key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        part = self.parts.get(str(event.row_key.value))
        if part is None:
            return
        why = no_files_reason(part)
        if why:
            self.notify(why, title=f"{part.folder} cannot be opened", severity="warning")
            return
        if part.fstype in FAMILIES:
            self.open_locked(part)
            return
        self.dismiss(part)

    @work(thread=True, exclusive=True, group="unlock", exit_on_error=False)
    def open_locked(self, part: ImagePartition) -> None:
        """Open ``part`` with the session's keys, or ask for one (the image's region notes name
        its protectors and recovery key ID)."""
        self.app.call_from_thread(self._status, f"opening {part.folder}…")
        said = self.services.unlock_partition(self.image.path, part)
        if not said:
            self.app.call_from_thread(self.dismiss, part)
            return
        regions = self.services.image_info(self.image.path)["regions"]
        region = next(r for r in regions if r["name"] == part.region)
        self.app.call_from_thread(self._ask_key, part, image_volume(self.image.path, region))

    def _ask_key(self, part: ImagePartition, volume: LockedVolume) -> None:
        self._status(self.summary)

        def attempt(secret: Secret) -> str:
            return self.services.unlock_partition(self.image.path, part, secret)

        def answered(opened: bool | None) -> None:
            if opened:
                self.dismiss(part)

        self.app.push_screen(UnlockModal(volume, attempt), answered)

    def _status(self, text: str) -> None:
        if self.is_attached:
            self.query_one("#browse-parts-status", Static).update(text)

    def action_back(self) -> None:
        self.dismiss(None)
