"""Several targets picked in the TUI: space marks disks on the target picker (a refused disk
cannot be marked, a second space unmarks), Enter goes on with the marked ones; the Plan names
them all, the Confirm modal lists them all and wants "yes" once, the Progress screen shows
each target's state and the Result each target's end. The clone runs for real onto two image
files (root: the demo disk has NTFS built over FUSE) and both are checked against the demo
disk's record; one target alone still goes exactly the old way (tests/tui/test_flows.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Static

from clonebay.model import Disk
from clonebay.testdisks import disks
from clonebay.tui.app import ClonebayApp
from clonebay.tui.screens.confirm import ConfirmModal
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.screens.plan import PlanScreen
from clonebay.tui.screens.progress import ProgressScreen
from clonebay.tui.screens.targets_picker import TargetsPickerScreen
from clonebay.tui.services import Role
from clonebay.tui.widgets.disk_table import DiskTable
from tests.diskcheck import assert_disk_matches
from tests.tui.helpers import cell_text, run, screen_of, type_into, until
from tests.tui.recorded import BLANK, DATA, LIVE, NVME, RecordedServices
from tests.tui.test_flows import (
    GatedServices,
    make_app,
    outcome_of,
    pick_disk,
    target_layout,
)

MIB = 1 << 20


class TwoFree(RecordedServices):
    """The recorded disks with the data disk unmounted: two disks may be targets."""

    def refusal(self, role: Role, disk: Disk, source: str | None = None) -> str:
        return "" if disk.path == DATA.path else super().refusal(role, disk, source)


def test_marks_pick_several_targets() -> None:
    """Recorded disks: mark two, try the refused live disk, unmark and mark again; Enter
    returns the marked disks in the order they were marked."""
    services = TwoFree()
    app = ClonebayApp(services, watch_disks=False)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        picker = TargetsPickerScreen(services, source=NVME)
        seen["result"] = None

        def got(result: object) -> None:
            seen["result"] = result

        await pilot.app.push_screen(picker, got)
        await until(pilot, "verdicts", lambda: len(picker.refusals) == len(picker.disks) > 0)
        table = picker.query_one(DiskTable)
        rows = [d.path for d in picker.disks]

        async def to(path: str) -> None:
            table.move_cursor(row=rows.index(path))
            await pilot.pause()

        await to(DATA.path)
        await pilot.press("space")
        await to(LIVE.path)  # refused: the running system
        await pilot.press("space")
        await to(BLANK.path)
        await pilot.press("space", "space", "space")  # marked, unmarked, marked again
        seen["cells"] = cell_text(table.get_row(BLANK.path))[0]
        seen["status"] = str(picker.query_one("#picker-status", Static).render())
        await pilot.press("enter")
        await until(pilot, "the answer", lambda: seen["result"] is not None)

    run(app, script)
    result = seen["result"]
    assert isinstance(result, list) and all(isinstance(d, Disk) for d in result)
    assert [d.path for d in result] == [DATA.path, BLANK.path]
    assert seen["cells"].startswith("● ")
    assert "2 target(s) marked" in seen["status"]


def test_clone_flow_onto_two_targets(demo_disk: disks.BuiltDisk, tmp_path: Path) -> None:
    first, second = tmp_path / "first.img", tmp_path / "second.img"
    for path, size in ((first, demo_disk.size), (second, demo_disk.size + 64 * MIB)):
        with open(path, "wb") as f:
            f.truncate(size)
    paths = [str(p) for p in (demo_disk.path, first, second)]
    # gated: the job's first progress waits for the test, which would otherwise miss the
    # progress screen of a copy that ends within a poll
    services = GatedServices(paths, machine_disks=False, image_dir=str(tmp_path))
    app = make_app([], tmp_path, services)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        home = await screen_of(pilot, HomeScreen)
        await pilot.press("c")
        source = await pick_disk(pilot, home, row=0)
        await until(pilot, "the targets picker", lambda: pilot.app.screen is not source)
        picker = await screen_of(pilot, TargetsPickerScreen)
        await until(pilot, "verdicts", lambda: len(picker.refusals) == len(picker.disks) > 0)
        await pilot.press("down", "space", "down", "space", "enter")
        plan = await screen_of(pilot, PlanScreen)
        await until(pilot, "the plan", lambda: plan.view is not None)
        seen["plan"] = str(plan.query_one("#plan-targets", Static).render())
        await pilot.press("enter")
        modal = await screen_of(pilot, ConfirmModal)
        assert modal.focused is not None and modal.focused.id == "no"
        seen["answer"] = modal.answer
        seen["ident"] = str(modal.query_one("#confirm-ident", Static).render())
        await type_into(pilot, "#confirm-input", "yes")
        await pilot.press("enter")
        progress = await screen_of(pilot, ProgressScreen)
        await until(pilot, "the copy running", services.reached.is_set)
        services.gate.set()
        seen["progress"] = progress
        seen["outcome"] = await outcome_of(pilot)
        seen["states"] = dict(progress.states)

    run(app, script)
    assert "2 targets" in seen["plan"] and str(second) in seen["plan"]
    assert seen["answer"] == "YES"
    assert str(first) in seen["ident"] and str(second) in seen["ident"]
    assert seen["states"] == {str(first): "done", str(second): "done"}
    outcome = seen["outcome"]
    assert outcome.ok, outcome
    assert [t.target for t in outcome.targets] == [str(first), str(second)]
    assert all(t.ok and "verified" in t.text for t in outcome.targets), outcome.targets
    for target in (first, second):
        assert_disk_matches(target, demo_disk, tmp_path, target_layout(target))
