"""A disk layout with its title, its bar and its partitions as a table (the Plan screen shows
two side by side; the pickers show the highlighted disk's)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Label, Static

from clonebay.tui.layouts import Layout, LayoutRow
from clonebay.tui.widgets.layout_bar import LayoutBar
from clonebay.units import human_size

ALL = ("#", "Start", "Size", "FS", "Label", "Used", "Copy")
SOURCE = ("#", "Size", "FS", "Label", "Used")
TARGET = ("#", "Start", "Size", "FS", "Copy")


def _copy_cell(row: LayoutRow) -> str:
    if row.copy and row.note:
        return f"{row.copy}, {row.note}"
    return row.copy or row.note


def row_cells(row: LayoutRow, columns: tuple[str, ...] = ALL) -> list[str]:
    cells = {
        "#": row.name,
        "Start": human_size(row.start),
        "Size": human_size(row.size),
        "FS": row.fstype or "-",
        "Label": row.label,
        "Used": "" if row.used is None else human_size(row.used),
        "Copy": _copy_cell(row),
    }
    return [cells[c] for c in columns]


class LayoutView(Vertical):
    """Title, bar, table and notes of one Layout; ``show(None, why)`` shows a message instead."""

    DEFAULT_CSS = """
    LayoutView { height: auto; overflow: hidden hidden; }
    LayoutView > .layout-title { text-style: bold; width: 1fr; }
    LayoutView > DataTable { height: auto; overflow-x: hidden; }
    LayoutView > .layout-notes { color: $text-muted; height: auto; }
    """

    def __init__(
        self, layout: Layout | None = None, columns: tuple[str, ...] = ALL, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self._initial = layout
        self.columns = columns

    def compose(self) -> ComposeResult:
        yield Label("", classes="layout-title")
        yield LayoutBar()
        table: DataTable[Text] = DataTable(cursor_type="none", zebra_stripes=True)
        table.can_focus = False
        table.display = False  # until there is a layout to show
        yield table
        yield Static("", classes="layout-notes")

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*self.columns)
        if self._initial is not None:
            self.show(self._initial)

    def show(self, layout: Layout | None, message: str = "") -> None:
        title = self.query_one(".layout-title", Label)
        notes = self.query_one(".layout-notes", Static)
        table: DataTable[Text] = self.query_one(DataTable)
        table.clear()
        self.query_one(LayoutBar).show(layout)
        if layout is None:
            title.update(Text(message))
            notes.update("")
            table.display = False
            return
        table.display = True
        title.update(Text(layout.title))
        for row in layout.rows:
            table.add_row(*(Text(cell) for cell in row_cells(row, self.columns)))
        notes.update(Text("\n".join(f"• {n}" for n in layout.notes)))
        notes.display = bool(layout.notes)
