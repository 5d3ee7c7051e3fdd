"""A disk drawn as one line: each partition a coloured block as wide as its share of the disk,
free space as a dotted block. Side by side, a source bar and a target bar show at a glance
what grows, what moves and what stays."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

from clonebay.tui.layouts import Layout

FS_COLOURS = {
    "ntfs": "#3b6fd8",
    "ext2": "#2e9b57",
    "ext3": "#2e9b57",
    "ext4": "#2e9b57",
    "fat12": "#c9a227",
    "fat16": "#c9a227",
    "fat32": "#c9a227",
    "swap": "#9b4dca",
}
RAW_COLOUR = "#6b7280"


@dataclass(frozen=True)
class Span:
    """``cells`` characters of the bar: a partition (``name`` set) or free space."""

    name: str
    fstype: str
    cells: int


def spans(layout: Layout, width: int) -> list[Span]:
    """Split ``width`` cells among partitions and gaps in proportion to their bytes; every
    partition gets at least one cell, so a 1 MiB BIOS boot partition stays visible."""
    if width <= 0 or layout.disk_size <= 0:
        return []
    pieces: list[tuple[str, str, int]] = []
    at = 0
    for row in sorted(layout.rows, key=lambda r: r.start):
        if row.start > at:
            pieces.append(("", "", row.start - at))
        pieces.append((row.name, row.fstype, row.size))
        at = max(at, row.start + row.size)
    if at < layout.disk_size:
        pieces.append(("", "", layout.disk_size - at))
    cells = [
        max(1 if name else 0, round(size * width / layout.disk_size)) for name, _, size in pieces
    ]
    for _ in range(len(cells) * width):  # bounded: each step moves one cell
        excess = sum(cells) - width
        if excess == 0:
            break
        i = max(range(len(cells)), key=lambda k: cells[k])
        if excess > 0 and cells[i] <= 1:
            break  # more partitions than cells: the bar is as small as it gets
        cells[i] -= 1 if excess > 0 else -1
    return [Span(name, fs, n) for (name, fs, _), n in zip(pieces, cells, strict=True) if n > 0]


def render_spans(parts: list[Span]) -> Text:
    text = Text(no_wrap=True, overflow="crop")
    for span in parts:
        if not span.name:
            text.append("·" * span.cells, style="dim")
            continue
        colour = FS_COLOURS.get(span.fstype, RAW_COLOUR)
        label = span.name if len(span.name) <= span.cells else ""
        text.append(label.center(span.cells), style=f"bold white on {colour}")
    return text


class LayoutBar(Widget):
    """One disk layout as a proportional bar (height 1)."""

    DEFAULT_CSS = "LayoutBar { height: 1; }"

    def __init__(self, layout: Layout | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.layout_data = layout

    def show(self, layout: Layout | None) -> None:
        self.layout_data = layout
        self.refresh()

    def render(self) -> Text:
        if self.layout_data is None:
            return Text("")
        return render_spans(spans(self.layout_data, self.size.width))
