"""Disk details (Home → Disks → a disk): everything the host says about a disk and everything
the prober found on it: identity (model, serial, WWN, by-id names), geometry, where it is
mounted, and each partition's filesystem, state and how it would be copied and why. A locked
BitLocker or LUKS volume is named with what would open it, and Unlock (key u) takes its key as
the Plan's does; the disk is read again with it."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Label, Static

from clonebay.engine import DiskReport
from clonebay.model import Disk
from clonebay.tui.layouts import disk_layout
from clonebay.tui.screens.unlock import UnlockingScreen
from clonebay.tui.services import Services
from clonebay.tui.text import disk_name, status_words
from clonebay.tui.unlocking import hibernated_notes, locked_volumes
from clonebay.tui.widgets.layout_view import LayoutView
from clonebay.tui.widgets.locked_panel import LockedPanel
from clonebay.units import human_size


def facts(disk: Disk) -> list[tuple[str, str]]:
    return [
        ("Device", disk.path),
        ("Model", disk.model or "-"),
        ("Serial", disk.serial or "-"),
        ("WWN", disk.wwn or "-"),
        ("Size", f"{human_size(disk.size)} ({disk.size} bytes)"),
        ("Bus", disk.transport or "-"),
        (
            "Sectors",
            f"{disk.logical_sector_size} B logical, {disk.physical_sector_size} B physical",
        ),
        ("Kind", "rotating" if disk.rotational else "solid state or virtual"),
        ("Status", "; ".join(status_words(disk)) or "free"),
        ("By id", "\n".join(disk.by_id) or "-"),
    ]


class DiskDetailsScreen(UnlockingScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, services: Services, disk: Disk) -> None:
        super().__init__()
        self.services = services
        self.disk = disk
        self.report: DiskReport | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(Text(disk_name(self.disk)), classes="screen-heading")
        with VerticalScroll():
            text = Text()
            for name, value in facts(self.disk):
                text.append(f"{name:<9}", style="bold")
                text.append(value.replace("\n", "\n" + " " * 9) + "\n")
            yield Static(text, id="disk-facts")
            yield LayoutView(id="details-layout")
            yield LockedPanel(id="details-locked")
            yield Static("", id="disk-notes")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(LayoutView).show(None, "reading…")
        self.inspect()

    @work(thread=True, exit_on_error=False)
    def inspect(self) -> None:
        report = self.services.inspect(self.disk.path)
        self.app.call_from_thread(self._show, report)

    def _show(self, report: DiskReport) -> None:
        self.report = report
        self.query_one(LayoutView).show(disk_layout(self.disk.path, report))
        locked = locked_volumes(report)
        self.query_one(LockedPanel).show(locked, hibernated_notes(report))
        told = {v.number for v in locked}  # their notes are in the panel
        notes = [
            f"p{pr.partition.number}: {note}"
            for pr in report.partitions
            if pr.volume is not None and pr.partition.number not in told
            for note in pr.volume.notes
        ]
        if report.whole_disk is not None and 0 not in told:
            notes.extend(report.whole_disk.notes)
        self.query_one("#disk-notes", Static).update(Text("\n".join(notes)))
        self.refresh_bindings()

    def unlocked(self) -> None:
        self.query_one(LayoutView).show(None, "reading…")
        self.inspect()

    def action_back(self) -> None:
        self.dismiss(None)
