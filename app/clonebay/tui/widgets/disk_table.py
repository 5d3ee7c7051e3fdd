"""The table of disks in the pickers: one row per disk, keyed by its path.

A disk the guard refuses for the picker's role is drawn dimmed, with the guard's words in the
Status column, and selecting it is refused by the screen. The live-system disk carries a badge
whatever the role. The Health column says what SMART says (system/smart.py): good, a yellow
warning, a red FAILING, or "-" where the disk has none or it cannot be read. Rows are rebuilt
when the list changes (hotplug, refresh); the cursor stays on the same disk when it is still
there.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import DataTable

from clonebay.model import Disk
from clonebay.system.smart import Health, Verdict
from clonebay.tui.text import short_reason, status_words
from clonebay.units import human_size

COLUMNS = ("Disk", "Model", "Serial", "Size", "Bus", "Health", "Status", "Partitions")
HEALTH_CELLS = {  # verdict -> (words, style)
    Verdict.GOOD: ("good", "#46a758"),
    Verdict.WARNING: ("warning", "#d4a72c"),
    Verdict.FAILING: ("FAILING", "bold #e5484d"),
    Verdict.UNKNOWN: ("-", "dim"),
}


@dataclass(frozen=True)
class DiskRow:
    """A disk, why it may not be picked ("" when it may; None while the guard is asked), a
    one-line summary of what is on it, and its SMART health (None while smartctl is asked)."""

    disk: Disk
    refusal: str | None = ""
    contents: str = "reading…"
    marked: bool = False  # marked as one of several targets (the targets picker)
    health: Health | None = None


MODEL_WIDTH = 32  # a loop device's model is its backing file's path: the status must stay seen


def clip(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, its end kept (a path's file name matters most)."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def row_cells(row: DiskRow) -> list[Text]:
    disk = row.disk
    words = status_words(disk)
    status = Text()
    if disk.is_live_medium:
        status.append(" LIVE SYSTEM ", style="bold white on #b42318")
        words.remove("LIVE SYSTEM")
    if row.refusal:
        why = short_reason(row.refusal, disk.path)
        status.append(("  " if status else "") + "✗ " + why, style="#e5484d")
    elif words:
        status.append(("  " if status else "") + "; ".join(words), style="#d4a72c")
    elif row.refusal is None:
        status.append("checking…", style="dim")
    elif not disk.is_live_medium:
        status.append("free", style="#46a758")
    style = "dim" if row.refusal else ""
    cells = [
        Text(("● " if row.marked else "") + disk.path, style=style or "bold"),
        Text(clip(disk.model or "-", MODEL_WIDTH), style=style),
        Text(disk.serial or "-", style=style),
        Text(human_size(disk.size), style=style, justify="right"),
        Text(disk.transport or "-", style=style),
    ]
    health = ("…", "dim") if row.health is None else HEALTH_CELLS[row.health.verdict]
    return [*cells, Text(health[0], style=health[1]), status, Text(row.contents, style=style)]


class DiskTable(DataTable[Text]):
    """Disks as rows; ``rows`` holds the DiskRow of each path."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, id=id)
        self.rows_by_path: dict[str, DiskRow] = {}

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def set_rows(self, rows: list[DiskRow]) -> None:
        """Show ``rows`` in order, keeping the cursor on the same disk if it is still listed."""
        keep = self.highlighted_path()
        self.clear()
        self.rows_by_path = {r.disk.path: r for r in rows}
        for row in rows:
            self.add_row(*row_cells(row), key=row.disk.path)
        if keep in self.rows_by_path:
            self.move_cursor(row=self.get_row_index(keep))

    def update_row(self, row: DiskRow) -> None:
        """Redraw one disk's row (its contents were read, or its refusal changed)."""
        if row.disk.path not in self.rows_by_path:
            return
        self.rows_by_path[row.disk.path] = row
        for column, cell in zip(self.columns, row_cells(row), strict=True):
            self.update_cell(row.disk.path, column, cell, update_width=True)

    def highlighted_path(self) -> str | None:
        if not self.rows_by_path or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return str(key.value) if key.value is not None else None

    def highlighted(self) -> DiskRow | None:
        path = self.highlighted_path()
        return None if path is None else self.rows_by_path.get(path)
