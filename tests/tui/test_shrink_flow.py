"""Clone and restore onto a smaller disk through the TUI (issue 16): the plan shows which
partitions shrink and the least each may have, the job runs, and the target holds every file
of the demo disk at the new, smaller places."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from clonebay.testdisks import disks
from clonebay.testdisks.files import sparse_file
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.screens.image_picker import ImagePickerScreen
from clonebay.tui.screens.plan import PlanScreen
from tests.diskcheck import assert_disk_matches, sha256_range
from tests.tui.helpers import pick_folder_store, run, screen_of, until
from tests.tui.test_flows import (
    confirm_yes,
    make_app,
    next_picker,
    outcome_of,
    pick_disk,
    target_layout,
)


def _smaller(tmp_path: Path, demo_disk: disks.BuiltDisk) -> Path:
    return sparse_file(tmp_path / "smaller.img", demo_disk.size * 70 // 100 // 512 * 512)


async def _shrinking_plan(pilot: Pilot[Any], seen: dict[str, Any]) -> None:
    plan = await screen_of(pilot, PlanScreen)
    await until(pilot, "the plan", lambda: plan.view is not None)
    assert plan.view is not None
    seen["notes"] = [row.note for row in plan.view.right.rows]
    await pilot.press("enter")
    await confirm_yes(pilot)
    seen["outcome"] = await outcome_of(pilot)


def _check(target: Path, demo_disk: disks.BuiltDisk, tmp_path: Path, seen: dict[str, Any]) -> None:
    assert any("shrinks" in n and "(least " in n for n in seen["notes"]), seen["notes"]
    outcome = seen["outcome"]
    assert outcome.ok and outcome.verify.startswith("Verified"), outcome
    layout = target_layout(target)
    original = target_layout(demo_disk.path)
    assert any(size < original[n][1] for n, (_, size) in layout.items()), layout
    assert_disk_matches(target, demo_disk, tmp_path, layout)


def test_clone_onto_smaller_disk(demo_disk: disks.BuiltDisk, tmp_path: Path) -> None:
    target = _smaller(tmp_path, demo_disk)
    digest = sha256_range(demo_disk.path, 0, demo_disk.size)
    app = make_app([demo_disk.path, target], tmp_path)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        home = await screen_of(pilot, HomeScreen)
        await pilot.press("c")
        source = await pick_disk(pilot, home, row=0)
        await next_picker(pilot, source)
        await pilot.press("down", "enter")
        await _shrinking_plan(pilot, seen)

    run(app, script)
    _check(target, demo_disk, tmp_path, seen)
    assert sha256_range(demo_disk.path, 0, demo_disk.size) == digest


def test_restore_onto_smaller_disk(
    demo_disk: disks.BuiltDisk, demo_image: Path, tmp_path: Path
) -> None:
    target = _smaller(tmp_path, demo_disk)
    app = make_app([demo_disk.path, target], demo_image.parent)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        await pilot.press("r")
        await pick_folder_store(pilot)
        picker = await screen_of(pilot, ImagePickerScreen)
        await until(pilot, "the image list", lambda: bool(picker.entries))
        await pilot.press("enter")
        await pick_disk(pilot, picker, row=1)
        await _shrinking_plan(pilot, seen)

    run(app, script)
    _check(target, demo_disk, tmp_path, seen)
