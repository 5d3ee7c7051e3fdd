"""Image picker: choose an image (to restore, to browse) from a folder (a USB stick, a share).

Every image directory in the folder and one level below is listed with the disk it was saved
from, when, the disk's size and the space the image takes; images that cannot be read (no
manifest: an interrupted save; a damaged manifest) are listed with the reason and cannot be
picked. Key v re-reads every frame of the highlighted image (engine.jobs.verify_image) and
shows the verdict in its row. The highlighted image's layout is shown below.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Input, Label, Static

from clonebay.tui.jobs import Tick
from clonebay.tui.layouts import image_layout
from clonebay.tui.screens.base import BaseScreen
from clonebay.tui.services import ImageEntry, Services
from clonebay.tui.text import created_text
from clonebay.tui.widgets.layout_view import LayoutView
from clonebay.units import human_size

COLUMNS = ("Image", "Saved from", "Created", "Disk size", "Image size", "Status")


class ImagePickerScreen(BaseScreen[ImageEntry | None]):
    """Dismisses with the chosen ImageEntry, or None on Escape. ``heading`` says what the image is
    picked for, ``use`` what an unreadable image cannot be ("restored", "opened")."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("v", "verify", "Verify"),
        Binding("r", "rescan", "Rescan"),
    ]

    def __init__(
        self,
        services: Services,
        folder: str,
        heading: str = "Pick the image to restore.",
        use: str = "restored",
    ) -> None:
        super().__init__()
        self.services = services
        self.folder = folder
        self.heading = heading
        self.use = use
        self.entries: dict[str, ImageEntry] = {}
        self.verdicts: dict[str, str] = {}
        self.infos: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(self.heading, classes="screen-heading")
        yield Input(self.folder, placeholder="folder with images", id="image-folder")
        yield DataTable(id="images", cursor_type="row", zebra_stripes=True)
        yield Static("", id="image-status")
        yield LayoutView(id="image-layout")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#images", DataTable).add_columns(*COLUMNS)
        self.query_one("#images", DataTable).focus()
        self.scan(self.folder)

    @work(thread=True, exclusive=True, group="scan", exit_on_error=False)
    def scan(self, folder: str) -> None:
        entries = self.services.images(folder)
        self.app.call_from_thread(self._show, entries)

    def _cells(self, entry: ImageEntry) -> list[Text]:
        style = "dim" if entry.problem else ""
        verdict = self.verdicts.get(entry.path, "")
        if entry.problem:
            status = Text(f"✘ cannot be {self.use}", style="#e5484d")
        elif verdict.startswith("OK"):
            status = Text("✔ verified", style="#46a758")
        elif verdict and not verdict.startswith("checking"):
            status = Text(verdict, style="#e5484d")
        else:
            status = Text(verdict or "not verified yet (v)", style="dim")
        return [
            Text(entry.name, style=style or "bold"),
            Text(entry.source, style=style),
            Text(created_text(entry.created), style=style),
            Text(human_size(entry.source_size) if entry.source_size else "", justify="right"),
            Text(human_size(entry.stored_bytes) if entry.stored_bytes else "", justify="right"),
            status,
        ]

    def _show(self, entries: list[ImageEntry]) -> None:
        table: DataTable[Text] = self.query_one("#images", DataTable)
        table.clear()
        self.entries = {e.path: e for e in entries}
        for entry in entries:
            table.add_row(*self._cells(entry), key=entry.path)
        status = self.query_one("#image-status", Static)
        if not entries:
            status.update(Text(f"No images in {self.folder}. Type another folder above."))
        else:
            self._describe(self._highlighted())

    def _highlighted(self) -> ImageEntry | None:
        table: DataTable[Text] = self.query_one("#images", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.entries.get(str(key))

    def _redraw(self, path: str) -> None:
        table: DataTable[Text] = self.query_one("#images", DataTable)
        entry = self.entries.get(path)
        if entry is None:
            return
        for column, cell in zip(table.columns, self._cells(entry), strict=True):
            table.update_cell(path, column, cell, update_width=True)

    # --- events and actions ----------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.folder = event.value.strip() or "."
        self.query_one("#images", DataTable).focus()
        self.scan(self.folder)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        entry = self._highlighted()
        self._describe(entry)
        view = self.query_one(LayoutView)
        if entry is None or entry.problem:
            view.show(None, entry.problem if entry else "")
        elif entry.path in self.infos:
            view.show(image_layout(self.infos[entry.path]))
        else:
            view.show(None, "reading…")
            self.load_info(entry.path)

    def _describe(self, entry: ImageEntry | None) -> None:
        """The status line: the highlighted image's path and verdict, or why it cannot be used."""
        if entry is None:
            return
        if entry.problem:
            text = Text(f"{entry.path}: {entry.problem}", style="#e5484d")
        else:
            verdict = self.verdicts.get(entry.path, "")
            text = Text(entry.path + (f": {verdict}" if verdict else ""))
        self.query_one("#image-status", Static).update(text)

    @work(thread=True, exclusive=True, group="info", exit_on_error=False)
    def load_info(self, path: str) -> None:
        info = self.services.image_info(path)
        self.app.call_from_thread(self._info, path, info)

    def _info(self, path: str, info: dict[str, Any]) -> None:
        self.infos[path] = info
        entry = self._highlighted()
        if entry is not None and entry.path == path:
            self.query_one(LayoutView).show(image_layout(info))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        entry = self._highlighted()
        if entry is None:
            return
        if entry.problem:
            self.notify(entry.problem, title=f"This image cannot be {self.use}", severity="warning")
            return
        self.dismiss(entry)

    def action_back(self) -> None:
        self.dismiss(None)

    def action_rescan(self) -> None:
        self.scan(self.folder)

    def action_verify(self) -> None:
        entry = self._highlighted()
        if entry is None or entry.problem:
            return
        self.verdicts[entry.path] = "checking…"
        self._redraw(entry.path)
        self.verify(entry.path)

    @work(thread=True, group="verify", exit_on_error=False)
    def verify(self, path: str) -> None:
        def tick(t: Tick) -> None:
            done = f"checking… {t.done * 100 // max(t.total, 1)}%"
            self.app.call_from_thread(self._verdict, path, done)

        try:
            verdict = self.services.verify_image(path, tick)
        except BaseException:
            self.app.call_from_thread(self._verdict, path, "")
            raise
        self.app.call_from_thread(self._verdict, path, verdict)

    def _verdict(self, path: str, verdict: str) -> None:
        self.verdicts[path] = verdict
        self._redraw(path)
        self._describe(self._highlighted())
