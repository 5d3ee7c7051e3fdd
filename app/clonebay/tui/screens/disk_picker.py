"""Disk picker: choose the source, the target, or a disk to look at (Disks).

The table lists every disk with what is on it (read by engine.inspect in a worker, row by row,
so a slow disk does not hold up the list), its SMART health (smartctl, in a worker of its own:
a USB bridge that hangs holds up only its own cell) and, for the role, the guard's verdict: a
target that is the source, is mounted or in use, or holds the running system is dimmed with the
reason and cannot be picked. Below the table, the highlighted disk's layout, with SMART's
reasons when it is worn or failing. The list follows hotplug (the
app calls ``disks_changed``); key r reads everything again.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Label, Static
from textual.worker import get_current_worker

from clonebay.engine import DiskReport
from clonebay.errors import ClonebayError
from clonebay.model import Disk
from clonebay.system.smart import Health, Verdict
from clonebay.tui.layouts import disk_layout
from clonebay.tui.screens.base import BaseScreen
from clonebay.tui.services import Role, Services
from clonebay.tui.text import disk_name, partitions_summary
from clonebay.tui.widgets.disk_table import DiskRow, DiskTable
from clonebay.tui.widgets.layout_view import LayoutView

PROMPTS = {
    Role.SOURCE: "Pick the disk to copy FROM. It is only read, never written.",
    Role.TARGET: "Pick the TARGET disk. Everything on it will be overwritten.",
    Role.BROWSE: "The disks of this machine. Enter shows the details of one.",
}


class DiskPickerScreen(BaseScreen[Disk | None]):
    """Dismisses with the chosen Disk, or None on Escape."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("r", "refresh", "Refresh"),
        Binding("enter", "pick", "Pick", show=True, priority=False),
    ]

    def __init__(
        self, services: Services, role: Role, source: Disk | None = None, title: str = ""
    ) -> None:
        super().__init__()
        self.services = services
        self.role = role
        self.source = source
        self.heading = title or PROMPTS[role]
        self.disks: list[Disk] = []
        self.refusals: dict[str, str] = {}
        self.reports: dict[str, DiskReport | str] = {}
        self.health: dict[str, Health] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(Text(self.heading), classes="screen-heading")
        if self.source is not None:
            yield Label(Text(f"Source: {disk_name(self.source)}"), classes="screen-subheading")
        yield DiskTable(id="disks")
        yield Static(Text("Reading the disks…"), id="picker-status")
        yield LayoutView(id="picker-layout")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DiskTable).focus()
        self.load()

    # --- reading disks (workers) -----------------------------------------------------------

    @work(thread=True, exclusive=True, group="disks", exit_on_error=False)
    def load(self, fresh: bool = False) -> None:
        """List the disks, then judge and inspect them (fresh: forget what was read before)."""
        if fresh:
            self.services.forget()
        disks = self.services.disks()
        self.app.call_from_thread(self.disks_changed, disks)

    def disks_changed(self, disks: list[Disk]) -> None:
        """New list of disks (from load, or from the app's hotplug watcher)."""
        if not self.is_mounted:  # the watcher's news came before this screen was composed:
            return  # its own load() lists the disks once it is
        old = {d.path: d for d in self.disks}
        self.disks = disks
        for disk in disks:
            if old.get(disk.path) != disk:
                self.reports.pop(disk.path, None)
                self.health.pop(disk.path, None)
        self._show()
        self.judge(disks)
        self.read_health([d for d in disks if d.path not in self.health])

    @work(thread=True, exclusive=True, group="judge", exit_on_error=False)
    def judge(self, disks: list[Disk]) -> None:
        """The guard's verdict on every disk, then what is on each disk not yet read."""
        worker = get_current_worker()
        source = self.source.path if self.source else None
        refusals = {d.path: self.services.refusal(self.role, d, source) for d in disks}
        if worker.is_cancelled:
            return
        self.app.call_from_thread(self._set_refusals, refusals)
        for disk in disks:
            if worker.is_cancelled:
                return
            if disk.path in self.reports:
                continue
            result: DiskReport | str
            try:
                result = self.services.inspect(disk.path)
            except ClonebayError as exc:
                result = f"cannot read: {exc.message}"
            self.app.call_from_thread(self._set_report, disk.path, result)

    @work(thread=True, exclusive=True, group="health", exit_on_error=False)
    def read_health(self, disks: list[Disk]) -> None:
        """Each disk's SMART health, drawn as it comes."""
        worker = get_current_worker()
        for disk in disks:
            if worker.is_cancelled:
                return
            health = self.services.health(disk.path)
            self.app.call_from_thread(self._set_health, disk.path, health)

    def _set_health(self, path: str, health: Health) -> None:
        self.health[path] = health
        self._redraw(path)

    def _set_refusals(self, refusals: dict[str, str]) -> None:
        self.refusals = refusals
        self._show()

    def _set_report(self, path: str, report: DiskReport | str) -> None:
        self.reports[path] = report
        self._redraw(path)

    def _redraw(self, path: str) -> None:
        """Draw one disk's row again (what is on it, or its health, was just read)."""
        disk = next((d for d in self.disks if d.path == path), None)
        if disk is not None:
            self.query_one(DiskTable).update_row(self._row(disk))
            self._describe_highlighted()

    # --- drawing ---------------------------------------------------------------------------

    def _row(self, disk: Disk) -> DiskRow:
        report = self.reports.get(disk.path)
        if report is None:
            contents = "reading…"
        elif isinstance(report, str):
            contents = report
        else:
            contents = partitions_summary(report)
        return DiskRow(
            disk,
            self.refusals.get(disk.path),
            contents,
            self.is_marked(disk),
            self.health.get(disk.path),
        )

    def is_marked(self, disk: Disk) -> bool:
        """Whether ``disk`` is marked as one of several targets (TargetsPickerScreen)."""
        return False

    def _show(self) -> None:
        self.query_one(DiskTable).set_rows([self._row(d) for d in self.disks])
        self._describe_highlighted()

    def _describe_highlighted(self) -> None:
        status = self.query_one("#picker-status", Static)
        view = self.query_one(LayoutView)
        row = self.query_one(DiskTable).highlighted()
        if row is None:
            status.update(Text("No disks found. Plug one in, or press r to look again."))
            view.show(None)
            return
        if row.refusal:
            text = Text(f"Cannot be picked: {row.refusal}", style="#e5484d")
        else:
            text = Text(disk_name(row.disk))
        if row.health is not None and row.health.worrying:
            failing = row.health.verdict is Verdict.FAILING
            look = "bold #e5484d" if failing else "#d4a72c"
            text.append(f"\nSMART health: {row.health.text()}", style=look)
        status.update(text)
        report = self.reports.get(row.disk.path)
        if isinstance(report, DiskReport):
            view.show(disk_layout(row.disk.path, report))
        else:
            view.show(None, report or "reading…")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._describe_highlighted()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_pick()

    # --- actions ---------------------------------------------------------------------------

    def action_pick(self) -> None:
        row = self.pickable()
        if row is not None:
            self.dismiss(row.disk)

    def pickable(self) -> DiskRow | None:
        """The highlighted row if it may be picked; else None, and the technician is told why."""
        row = self.query_one(DiskTable).highlighted()
        if row is None:
            return None
        if row.disk.path not in self.refusals:
            self.notify("still checking this disk; try again in a moment", severity="warning")
            return None
        if row.refusal:
            self.notify(row.refusal, title="This disk cannot be picked", severity="warning")
            return None
        return row

    def action_back(self) -> None:
        self.dismiss(None)

    def action_refresh(self) -> None:
        self.reports.clear()
        self.health.clear()
        self.load(fresh=True)
