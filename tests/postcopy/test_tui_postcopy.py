"""The post-copy pass in the TUI: on the Plan of a clone, a host name typed and "New IDs" ticked
are done after the copy (read back on the target with debugfs and the prober), the Result lists
what was done, and a name Windows could not take (or no valid host name) keeps the Plan open
with the reason, before anything is written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Checkbox, Static

from clonebay.engine.inspect import inspect_disk
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.screens.plan import PlanScreen
from tests.edgedisks import sha256
from tests.postcopy import minidisk
from tests.tui.helpers import run, screen_of, type_into, until
from tests.tui.test_flows import confirm_yes, make_app, next_picker, outcome_of, pick_disk

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root")


def blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_clone_with_a_new_name_and_new_ids_from_the_plan(tmp_path: Path) -> None:
    disk = minidisk.build(tmp_path / "source.img", tmp_path / "work")
    target = blank(tmp_path / "target.img", minidisk.DISK_SIZE)
    before = sha256(disk.path)
    app = make_app([disk.path, target], tmp_path)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        home = await screen_of(pilot, HomeScreen)
        await pilot.press("c")
        source = await pick_disk(pilot, home, row=0)
        await next_picker(pilot, source)
        await pilot.press("down", "enter")
        plan = await screen_of(pilot, PlanScreen)
        await until(pilot, "the plan", lambda: plan.view is not None)
        seen["preview"] = str(plan.query_one("#plan-after-text", Static).render())
        await type_into(pilot, "#hostname", "bad_name")
        plan.action_start()
        await pilot.pause()
        seen["refused"] = str(plan.query_one("#plan-status", Static).render())
        assert pilot.app.screen is plan
        field = plan.query_one("#hostname")
        field.value = ""  # type: ignore[attr-defined]
        await type_into(pilot, "#hostname", "lab-pc-09")
        plan.query_one("#new-ids", Checkbox).value = True
        await pilot.pause()
        seen["preview2"] = str(plan.query_one("#plan-after-text", Static).render())
        plan.action_start()
        await confirm_yes(pilot)
        seen["outcome"] = await outcome_of(pilot)

    run(app, script)
    assert "UEFI: \\EFI\\BOOT\\BOOTX64.EFI added when missing" in seen["preview"]
    assert "is not a host name" in seen["refused"]
    assert "the machine becomes lab-pc-09" in seen["preview2"] and "new disk" in seen["preview2"]
    outcome = seen["outcome"]
    assert outcome.ok, outcome
    text = "\n".join(outcome.details)
    assert "hostname: source-host -> lab-pc-09" in text
    assert "efi fallback loader" in text and "filesystem id" in text
    assert "new disk, partition and filesystem IDs" in outcome.next_step
    assert minidisk.read_root_file(target, "etc/hostname") == "lab-pc-09\n"
    uuids = {
        p.partition.number: p.volume.uuid for p in inspect_disk(str(target)).partitions if p.volume
    }
    assert uuids[2] != disk.root_uuid
    assert sha256(disk.path) == before
