"""Rescue mode in the TUI. A clone of a failing disk: the plain clone stops on the read error, the
Result says the source may be failing, and clonebay offers the clone again in rescue mode;
"Rescue" runs it and its Result lists the unreadable sector (a real GPT/ext4 disk behind
tests/faultfile.py, EIO for one sector of big.bin, the flow driven with Pilot). And the Plan
offers rescue mode ticked when the source's SMART worries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Checkbox

from clonebay.model import Disk
from clonebay.tui.app import ClonebayApp
from clonebay.tui.jobs import JobKind
from clonebay.tui.screens.ask import AskModal
from clonebay.tui.screens.error import ErrorModal
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.screens.plan import PlanScreen
from clonebay.tui.screens.progress import ProgressScreen
from clonebay.tui.screens.result import ResultScreen
from tests.engine.test_rescue import SECTOR, Source, read_map, source  # noqa: F401 (fixture)
from tests.faultfile import failing
from tests.tui.helpers import run, screen_of, until
from tests.tui.recorded import DATA, IMAGE, NVME, RecordedServices
from tests.tui.test_flows import confirm_yes, make_app, next_picker, pick_disk, start_plan


def test_a_read_error_offers_the_clone_again_in_rescue_mode(
    source: Source,  # noqa: F811 (the fixture)
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    monkeypatch.setenv("CLONEBAY_RESCUE_MAPS", str(tmp_path / "maps"))
    bad = (source.big_byte(0.5) + 2 * SECTOR, SECTOR)
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(source.disk.stat().st_size)
    seen: dict[str, Any] = {}
    with failing(source.disk, tmp_path / "mnt", *bad) as disk:
        app = make_app([disk, target], tmp_path)

        async def script(pilot: Pilot[Any]) -> None:
            home = await screen_of(pilot, HomeScreen)
            await pilot.press("c")
            picked = await pick_disk(pilot, home, row=0)
            await next_picker(pilot, picked)
            await pilot.press("down", "enter")
            await start_plan(pilot)
            await confirm_yes(pilot)
            error = await screen_of(pilot, ErrorModal)  # the read error, over Progress
            seen["error"] = error.text
            await pilot.press("escape")
            progress = await screen_of(pilot, ProgressScreen)
            await until(pilot, "the failure", lambda: progress.failure is not None)
            await pilot.click("#cancel")  # "Continue"
            first = await screen_of(pilot, ResultScreen)
            seen["first"] = first.outcome
            await pilot.press("enter")  # "Back to the menu"
            ask = await screen_of(pilot, AskModal)
            seen["question"] = ask.question
            await pilot.click("#yes")
            await until(pilot, "the rescue's result", lambda: _second_result(pilot, first))
            seen["second"] = pilot.app.screen.outcome  # type: ignore[attr-defined]
            await pilot.pause(0.3)  # the Result's header settles before the test app exits

        run(app, script)
    assert "read error in p1" in str(seen["error"])
    first, second = seen["first"], seen["second"]
    assert first.status == "failed" and first.rescue_offer
    assert "may be failing" in first.next_step
    assert "rescue mode" in seen["question"]
    assert second.status == "errors", second
    text = "\n".join(second.details)
    assert f"512 bytes at byte {bad[0]} of {disk}" in text, text
    (mapfile,) = (tmp_path / "maps").glob("*.map")
    assert [(a, n) for a, n, s in read_map(mapfile) if s == "-"] == [bad]


def _second_result(pilot: Pilot[Any], first: ResultScreen) -> bool:
    screen = pilot.app.screen
    return isinstance(screen, ResultScreen) and screen is not first


@pytest.mark.parametrize(("disk", "ticked"), [(DATA, True), (NVME, False)])
def test_the_plan_ticks_rescue_mode_when_smart_worries(disk: Disk, ticked: bool) -> None:
    """DATA's recorded SMART says 8 reallocated sectors: its Plan offers rescue mode ticked;
    a healthy disk's Plan leaves it to the technician. Start passes the choice on."""
    services = RecordedServices()
    app = ClonebayApp(services, watch_disks=False)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await pilot.pause()
        plan = PlanScreen(services, JobKind.SAVE, disk.path, IMAGE)
        pilot.app.push_screen(plan, lambda request: seen.setdefault("request", request))
        await until(pilot, "the plan", lambda: plan.view is not None)
        seen["ticked"] = plan.query_one("#rescue", Checkbox).value
        await pilot.click("#start")
        await until(pilot, "the request", lambda: "request" in seen)

    run(app, script)
    assert seen["ticked"] is ticked
    assert seen["request"].rescue is ticked
