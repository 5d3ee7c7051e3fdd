"""The clone, save and restore flows driven through the TUI with Pilot (root: the demo disk has
NTFS built over FUSE). The jobs really run, in the app's workers, and the result is checked on
the target against the demo disk's record: every filesystem clean by its own fsck and every file
hashing as built (tests/diskcheck.py), the image re-read frame by frame, the target read back
against the image. A cancelled job leaves a target that is plainly incomplete."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Button, RadioSet

from clonebay.engine import jobs
from clonebay.engine.inspect import inspect_disk
from clonebay.engine.layout.plan import Grow
from clonebay.testdisks import disks
from clonebay.tui.app import ClonebayApp
from clonebay.tui.jobs import JobRequest, Outcome, StateSink, TickSink
from clonebay.tui.screens.ask import AskModal
from clonebay.tui.screens.confirm import ConfirmModal
from clonebay.tui.screens.disk_picker import DiskPickerScreen
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.screens.image_picker import ImagePickerScreen
from clonebay.tui.screens.plan import PlanScreen
from clonebay.tui.screens.progress import ProgressScreen
from clonebay.tui.screens.result import ResultScreen
from clonebay.tui.screens.save_target import SaveTargetScreen
from clonebay.tui.services import Services
from tests.diskcheck import assert_disk_matches
from tests.tui.helpers import pick_folder_store, run, screen_of, type_into, until


def make_app(paths: list[Path], image_dir: Path, services: Services | None = None) -> ClonebayApp:
    services = services or Services(
        [str(p) for p in paths], machine_disks=False, image_dir=str(image_dir)
    )
    return ClonebayApp(services, watch_disks=False)


async def next_picker(pilot: Pilot[Any], previous: object) -> DiskPickerScreen:
    """The disk picker that follows ``previous``, once the guard has judged every disk."""
    await until(pilot, "a new screen", lambda: pilot.app.screen is not previous)
    picker = await screen_of(pilot, DiskPickerScreen)
    await until(pilot, "guard verdicts", lambda: len(picker.refusals) == len(picker.disks) > 0)
    return picker


async def pick_disk(pilot: Pilot[Any], previous: object, row: int) -> DiskPickerScreen:
    """On the disk picker that follows ``previous``, pick ``row``."""
    picker = await next_picker(pilot, previous)
    for _ in range(row):
        await pilot.press("down")
    await pilot.press("enter")
    return picker


async def start_plan(pilot: Pilot[Any]) -> PlanScreen:
    plan = await screen_of(pilot, PlanScreen)
    await until(pilot, "the plan", lambda: plan.view is not None)
    await pilot.press("enter")  # "Start" has the focus once the plan is shown
    return plan


async def confirm_yes(pilot: Pilot[Any]) -> None:
    modal = await screen_of(pilot, ConfirmModal)
    assert modal.focused is not None and modal.focused.id == "no"
    await type_into(pilot, "#confirm-input", "yes")
    await pilot.press("enter")


async def outcome_of(pilot: Pilot[Any]) -> Outcome:
    result = await screen_of(pilot, ResultScreen)
    return result.outcome


def target_layout(path: Path) -> dict[int, tuple[int, int]]:
    return {p.number: (p.start, p.size) for p in inspect_disk(str(path)).table.partitions}


def test_clone_flow(demo_disk: disks.BuiltDisk, blank_target: Path, tmp_path: Path) -> None:
    app = make_app([demo_disk.path, blank_target], tmp_path)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        home = await screen_of(pilot, HomeScreen)
        await pilot.press("c")
        source = await pick_disk(pilot, home, row=0)
        target = await next_picker(pilot, source)
        seen["refusal"] = target.refusals[str(demo_disk.path)]
        await pilot.press("enter")  # the source itself: refused, the picker stays
        await pilot.pause()
        assert pilot.app.screen is target
        await pilot.press("down", "enter")
        await start_plan(pilot)
        await confirm_yes(pilot)
        seen["outcome"] = await outcome_of(pilot)

    run(app, script)
    assert "is the source" in seen["refusal"]
    outcome = seen["outcome"]
    assert outcome.ok, outcome
    assert outcome.verify.startswith("Verified")
    assert "same IDs" in outcome.next_step
    layout = target_layout(blank_target)
    assert len(layout) == len(demo_disk.partitions)
    assert_disk_matches(blank_target, demo_disk, tmp_path, layout)


def test_save_flow(demo_disk: disks.BuiltDisk, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    app = make_app([demo_disk.path], images)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        home = await screen_of(pilot, HomeScreen)
        await pilot.press("s")
        await pick_disk(pilot, home, row=0)
        await pick_folder_store(pilot)
        await screen_of(pilot, SaveTargetScreen)
        await pilot.press("enter")  # the proposed name, in the image folder
        plan = await start_plan(pilot)
        seen["target"] = plan.target
        seen["outcome"] = await outcome_of(pilot)

    run(app, script)
    image = Path(seen["target"])
    assert image.parent == images
    assert seen["outcome"].ok and seen["outcome"].verify.startswith("Verified")
    report = jobs.verify_image(str(image))
    assert report.ok and report.frames > 0
    info = jobs.image_info(str(image))
    fstypes = {r["name"]: r["fstype"] for r in info["regions"]}
    for part in demo_disk.partitions:
        if part.fstype in ("fat32", "ntfs", "ext4", "swap"):
            assert fstypes[f"p{part.number}"] == part.fstype


def test_restore_flow(
    demo_disk: disks.BuiltDisk, demo_image: Path, blank_target: Path, tmp_path: Path
) -> None:
    app = make_app([demo_disk.path, blank_target], demo_image.parent)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        await pilot.press("r")
        await pick_folder_store(pilot)
        picker = await screen_of(pilot, ImagePickerScreen)
        await until(pilot, "the image list", lambda: bool(picker.entries))
        await pilot.press("enter")
        await pick_disk(pilot, picker, row=1)
        plan = await screen_of(pilot, PlanScreen)
        await until(pilot, "the plan", lambda: plan.view is not None)
        plan.query_one("#grow", RadioSet).focus()
        await pilot.press("down", "down", "enter")  # keep the sizes: the image's own layout
        start = plan.query_one("#start", Button)
        await until(pilot, "the new plan", lambda: plan.grow() is Grow.NONE and not start.disabled)
        await pilot.press("ctrl+s")
        await confirm_yes(pilot)
        seen["outcome"] = await outcome_of(pilot)

    run(app, script)
    assert seen["outcome"].ok and seen["outcome"].verify.startswith("Verified")
    # every partition reads back as the image holds it (the raw areas changed after the
    # verify, on purpose: the GPT backup moved to the end of the larger target)
    problems = jobs.verify_target(str(demo_image), str(blank_target))
    assert [p for p in problems if not p.startswith("region area")] == []
    assert_disk_matches(blank_target, demo_disk, tmp_path, target_layout(blank_target))


def test_restore_stream_grown_then_power_off(
    demo_disk: disks.BuiltDisk, demo_image: Path, tmp_path: Path
) -> None:
    """A stream image in the picker, restored onto a disk twice the size with the plan's
    default (grow in proportion), and "power off when done": the countdown ends, the power-off
    command runs (here one that leaves a mark) and the app exits."""
    images = tmp_path / "images"
    images.mkdir()
    stream = images / "demo.cbs"
    jobs.convert(str(demo_image), str(stream))
    target = tmp_path / "double.img"
    with open(target, "wb") as f:
        f.truncate(demo_disk.size * 2)
    mark = tmp_path / "powered-off"
    services = Services(
        [str(demo_disk.path), str(target)],
        machine_disks=False,
        image_dir=str(images),
        power_off_command=("touch", str(mark)),
        power_off_delay=1,
    )
    app = make_app([], images, services)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        await pilot.press("r")
        await pick_folder_store(pilot)
        picker = await screen_of(pilot, ImagePickerScreen)
        await until(pilot, "the image list", lambda: bool(picker.entries))
        seen["entries"] = list(picker.entries.values())
        await pilot.press("enter")
        await pick_disk(pilot, picker, row=1)
        plan = await screen_of(pilot, PlanScreen)
        await until(pilot, "the plan", lambda: plan.view is not None)
        assert plan.view is not None
        seen["planned"] = {row.name: (row.start, row.size) for row in plan.view.right.rows}
        await pilot.click("#power-off")
        await pilot.press("ctrl+s")
        await confirm_yes(pilot)
        result = await screen_of(pilot, ResultScreen)
        seen["outcome"] = result.outcome
        await until(pilot, "the power-off", mark.exists)
        # the command ran in a worker thread, which then asks the app to exit
        await until(pilot, "the app's exit", lambda: app.return_code is not None)

    run(app, script)
    [entry] = seen["entries"]
    assert entry.path == str(stream) and entry.problem == ""
    assert entry.stored_bytes == stream.stat().st_size
    outcome = seen["outcome"]
    assert outcome.ok and outcome.verify.startswith("Verified"), outcome
    layout = target_layout(target)
    assert_disk_matches(target, demo_disk, tmp_path, layout)
    original = target_layout(demo_disk.path)
    grown = [n for n, (_, size) in layout.items() if size > original[n][1]]
    assert grown, f"nothing grew: {layout} from {original}"
    for n, place in layout.items():  # the plan showed where each partition went
        assert seen["planned"][f"p{n}"] == place
    assert app.return_code == 0


class GatedServices(Services):
    """Real jobs, whose first progress event waits until the test has asked to cancel. The
    copy pipeline reports after its first chunk, so the cancel lands in the middle of the
    engine's copy, whatever the machine's speed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.reached = threading.Event()

    def run(
        self,
        request: JobRequest,
        sink: TickSink,
        cancel: threading.Event,
        on_state: StateSink | None = None,
    ) -> Outcome:
        def gated(tick: Any) -> None:
            self.reached.set()
            self.gate.wait(30)
            sink(tick)

        return super().run(request, gated, cancel, on_state)


def test_cancel_clone(demo_disk: disks.BuiltDisk, blank_target: Path, tmp_path: Path) -> None:
    services = GatedServices([str(demo_disk.path), str(blank_target)], machine_disks=False)
    app = make_app([], tmp_path, services)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        home = await screen_of(pilot, HomeScreen)
        await pilot.press("c")
        source = await pick_disk(pilot, home, row=0)
        await pick_disk(pilot, source, row=1)
        await start_plan(pilot)
        await confirm_yes(pilot)
        progress = await screen_of(pilot, ProgressScreen)
        await until(pilot, "the copy running", services.reached.is_set)
        await pilot.press("escape")
        ask = await screen_of(pilot, AskModal)
        assert ask.focused is not None and ask.focused.id == "no"
        await pilot.press("tab", "enter")  # "Yes, stop it"
        await until(pilot, "the cancel", progress.cancel.is_set)
        services.gate.set()
        seen["outcome"] = await outcome_of(pilot)

    run(app, script)
    outcome = seen["outcome"]
    assert outcome.status == "cancelled"
    assert any("incomplete" in line for line in outcome.details)
    assert "incomplete" in outcome.next_step
    # old tables are wiped first and the new one is written last: a cancelled clone leaves none
    assert inspect_disk(str(blank_target)).table.kind == "none"
