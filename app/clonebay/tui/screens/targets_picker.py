"""Targets picker: one target disk, or several written from one read of the source.

The disk picker as the target step of a clone or a restore, plus marks: space marks or unmarks
the highlighted disk (one the guard refuses cannot be marked), Enter goes on with the marked
disks in the order they were marked, or, with none marked, with the highlighted disk alone,
exactly as the one-target picker does. A technician with a USB hub marks four disks and writes
them all in the time of one (engine/target/fanout.py); each gets its own plan, checks, verify
and outcome.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import Static

from clonebay.model import Disk
from clonebay.tui.screens.disk_picker import DiskPickerScreen
from clonebay.tui.services import Role, Services
from clonebay.tui.widgets.disk_table import DiskTable

HINT = "Space marks several targets (all written from one read); Enter goes on."


class TargetsPickerScreen(DiskPickerScreen):
    """Dismisses with the list of target disks (one or more), or None on Escape. Typed as
    its base's result; the flows cast it (see ``pick_targets``)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "mark", "Mark"),
    ]

    def __init__(self, services: Services, source: Disk | None = None, title: str = "") -> None:
        super().__init__(services, Role.TARGET, source=source, title=title)
        self.heading = f"{self.heading} {HINT}"
        self.marked: list[Disk] = []

    def is_marked(self, disk: Disk) -> bool:
        return any(d.path == disk.path for d in self.marked)

    def action_mark(self) -> None:
        table = self.query_one(DiskTable)
        row = table.highlighted()
        if row is not None and self.is_marked(row.disk):
            self.marked = [d for d in self.marked if d.path != row.disk.path]
        else:
            row = self.pickable()
            if row is None:
                return
            self.marked.append(row.disk)
        table.update_row(self._row(row.disk))
        self._show_marks()

    def _show_marks(self) -> None:
        status = self.query_one("#picker-status", Static)
        if self.marked:
            names = ", ".join(d.path for d in self.marked)
            status.update(Text(f"{len(self.marked)} target(s) marked: {names}", style="bold"))
        else:
            self._describe_highlighted()

    def disks_changed(self, disks: list[Disk]) -> None:
        here = {d.path for d in disks}  # a marked disk that was unplugged is no target
        self.marked = [d for d in self.marked if d.path in here]
        super().disks_changed(disks)

    def action_pick(self) -> None:
        if self.marked:
            gone = [d for d in self.marked if self.refusals.get(d.path)]
            if gone:
                why = self.refusals[gone[0].path]
                self.notify(why, title=f"{gone[0].path} cannot be a target", severity="warning")
                return
            self.dismiss(cast(Any, list(self.marked)))
            return
        row = self.pickable()
        if row is not None:
            self.dismiss(cast(Any, [row.disk]))


async def pick_targets(app: Any, screen: TargetsPickerScreen) -> list[Disk] | None:
    """Push the targets picker and wait for its list (or None)."""
    return cast("list[Disk] | None", await app.push_screen_wait(screen))
