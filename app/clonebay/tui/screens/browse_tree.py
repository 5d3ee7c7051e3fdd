"""Browse, step 3: walk a partition's folders and mark what to pull out.

One folder is shown at a time as a table (name, size, modification time in UTC, mode), read by
Services.list_dir, which mounts the partition read-only just for that listing: nothing stays
mounted while the technician reads the screen. Enter opens a folder, Backspace goes up, Space
marks or unmarks a file or folder (marks are kept across folders, by path), and x extracts the
marked entries on the Extract screen. The line under the table counts what is marked; a marked
folder's content is counted when it is copied, not before (that would read the whole tree).
"""

from __future__ import annotations

import os
import stat
import time
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Label, Static

from clonebay.tui.screens.base import BaseScreen
from clonebay.tui.screens.browse_extract import ExtractScreen, counted
from clonebay.tui.services import FileEntry, ImageEntry, ImagePartition, Services
from clonebay.units import human_size

COLUMNS = (" ", "Name", "Size", "Modified (UTC)", "Mode")
UP = ".."  # the row key of the "go up" row
KIND_CHAR = {"dir": "d", "symlink": "l", "file": "-"}


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def entry_cells(entry: FileEntry, marked: bool) -> list[Text]:
    """One row: mark, name (folders end in /, links show their target), size, time, mode."""
    name = entry.path.rpartition("/")[2]
    if entry.kind == "dir":
        shown = Text(name + "/", style="bold #5fafff")
    elif entry.kind == "symlink":
        shown = Text.assemble(name, (f" -> {entry.target}", "dim"))
    else:
        shown = Text(name)
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(entry.mtime_ns / 1e9))
    mode = KIND_CHAR.get(entry.kind, "?") + stat.filemode(entry.mode)[1:]
    size = human_size(entry.size) if entry.kind == "file" else ""
    return [
        Text("●" if marked else " ", style="bold #d4a72c"),
        shown,
        Text(size, justify="right"),
        Text(when, style="dim"),
        Text(mode, style="dim"),
    ]


def marks_text(marked: dict[str, FileEntry]) -> Text:
    """The line under the table: how many are marked and the size of the marked files."""
    if not marked:
        return Text("Nothing marked. Space marks a file or folder; x extracts what is marked.")
    files = [e for e in marked.values() if e.kind != "dir"]
    folders = len(marked) - len(files)
    size = human_size(sum(e.size for e in files))
    what = [f"{counted(len(files), 'file')} ({size})"] if files else []
    if folders:
        what.append(f"{counted(folders, 'folder')} (content counted when copied)")
    return Text.assemble(
        (f"{len(marked)} marked: ", "bold #d4a72c"), " and ".join(what), ". x extracts them."
    )


class BrowseTreeScreen(BaseScreen[None]):
    """Dismisses with None when the technician goes back to the partitions."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Partitions"),
        Binding("backspace", "up", "Up"),
        Binding("space", "mark", "Mark"),
        Binding("x", "extract", "Extract"),
    ]

    def __init__(self, services: Services, image: ImageEntry, part: ImagePartition) -> None:
        super().__init__()
        self.services = services
        self.image = image
        self.part = part
        self.cwd = ""  # the folder shown, relative to the partition's root
        self.reading: str | None = None  # the folder being read
        self.entries: dict[str, FileEntry] = {}
        self.marked: dict[str, FileEntry] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(
            f"{self.image.name} › {self.part.folder} ({self.part.fstype}), read-only",
            classes="screen-heading",
        )
        yield Static("", id="browse-path", classes="screen-subheading")
        yield DataTable(id="browse-tree", cursor_type="row", zebra_stripes=True)
        yield Static(marks_text({}), id="browse-marks")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#browse-tree", DataTable)
        table.add_columns(*COLUMNS)
        table.focus()
        self.open(self.cwd)

    def open(self, path: str, cursor_on: str = "") -> None:
        """Read the folder ``path`` and show it (the cursor on ``cursor_on`` if it is there)."""
        self.reading = path
        self.query_one("#browse-path", Static).update(f"/{path}  reading…")
        self.read_folder(path, cursor_on)

    @work(thread=True, group="list", exit_on_error=False)
    def read_folder(self, path: str, cursor_on: str) -> None:
        try:
            entries = self.services.list_dir(self.image.path, self.part.region, path)
        except BaseException:
            self.app.call_from_thread(self._failed, path)
            raise
        self.app.call_from_thread(self._show, path, entries, cursor_on)

    def _failed(self, path: str) -> None:
        if self.reading == path and self.is_attached:
            self.reading = None
            self.query_one("#browse-path", Static).update(f"/{self.cwd}")

    def _show(self, path: str, entries: list[FileEntry], cursor_on: str) -> None:
        if self.reading != path or not self.is_attached:
            return  # the technician moved on before this folder was read
        self.reading = None
        self.cwd = path
        ordered = sorted(entries, key=lambda e: (e.kind != "dir", e.path.casefold()))
        self.entries = {e.path: e for e in ordered}
        table: DataTable[Text] = self.query_one("#browse-tree", DataTable)
        table.clear()
        if path:
            table.add_row(Text(" "), Text("../", style="bold"), *[Text("")] * 3, key=UP)
        for entry in ordered:
            table.add_row(*entry_cells(entry, entry.path in self.marked), key=entry.path)
        count = f"{len(ordered)} entries" if ordered else "empty folder"
        self.query_one("#browse-path", Static).update(f"/{path}  ({count})")
        if cursor_on in self.entries:
            table.move_cursor(row=table.get_row_index(cursor_on))

    def highlighted(self) -> str | None:
        """The row key under the cursor: an entry's path, or ".." for the go-up row."""
        table: DataTable[Text] = self.query_one("#browse-tree", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None else str(key)

    # --- keys ------------------------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = str(event.row_key.value)
        if self.reading is not None:
            return
        if key == UP:
            self.action_up()
            return
        entry = self.entries.get(key)
        if entry is not None and entry.kind == "dir":
            self.open(entry.path)
        elif entry is not None:
            self.notify("Space marks it, x extracts what is marked.", title=entry.path)

    def action_up(self) -> None:
        if self.cwd and self.reading is None:
            self.open(parent_of(self.cwd), cursor_on=self.cwd)

    def action_mark(self) -> None:
        key = self.highlighted()
        entry = self.entries.get(key or "")
        if entry is None or self.reading is not None:
            return
        if entry.path in self.marked:
            del self.marked[entry.path]
        else:
            self.marked[entry.path] = entry
        table: DataTable[Text] = self.query_one("#browse-tree", DataTable)
        mark_column = table.ordered_columns[0].key
        table.update_cell(entry.path, mark_column, entry_cells(entry, entry.path in self.marked)[0])
        self.query_one("#browse-marks", Static).update(marks_text(self.marked))
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1)

    def action_extract(self) -> None:
        if not self.marked:
            self.notify("Mark files or folders with Space first.", title="Nothing marked")
            return
        default = os.path.dirname(self.image.path.rstrip("/")) or self.services.image_dir
        self.app.push_screen(
            ExtractScreen(self.services, self.image, self.part, sorted(self.marked), default)
        )

    def action_back(self) -> None:
        self.dismiss(None)
