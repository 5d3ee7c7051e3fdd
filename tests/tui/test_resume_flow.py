"""An interrupted save in the TUI: picking its image folder again asks whether to resume it.

The interrupted save is real: the ``clonebay save`` CLI reads a GPT/ext4 disk
(tests/engine/test_rescue.py builds it) through tests/faultfile.py with big.bin's data slowed
down, checkpointing after every chunk (CLONEBAY_CHECKPOINT_EVERY=0), and is killed with SIGKILL
once its checkpoint counts saved bytes. Each test drives the TUI with Pilot over a copy of that
image folder. Checked against known truth: the question shows the bytes the checkpoint file
counts; a resumed or restarted image verifies and restores to the very bytes an uninterrupted
save's image restores to, with big.bin and the other files as built and e2fsck clean; a resume
refused (another disk, of another size) shows the engine's words and leaves every file of the
image as it was; a save cancelled after its checkpoint offers Resume on its Result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, Input

from clonebay.tui.screens.error import ErrorModal
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.screens.progress import ProgressScreen
from clonebay.tui.screens.resume_ask import ResumeModal
from clonebay.tui.screens.save_target import SaveTargetScreen
from clonebay.units import human_size
from tests.edgedisks import CLONEBAY, MIB, clonebay
from tests.engine.test_rescue import (
    SECTOR,
    Source,
    assert_files_but_bad,
    big_bin_hit,
    build_source,
    disk_files,
    read_map,
    restored_files,
)
from tests.faultfile import failing
from tests.tui.helpers import (
    cancel_at_once,
    pick_folder_store,
    resume_on,
    run,
    screen_of,
    until,
)
from tests.tui.test_flows import make_app, outcome_of, pick_disk, start_plan

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="FUSE mounts need root"
)


@dataclass(frozen=True)
class Interrupted:
    source: Source
    image: Path  # the killed save's image folder (copied by each test, never changed)
    rescued: Path  # a killed save --rescue's image, its map beside it (for one test)
    whole: str  # sha256 of what an uninterrupted save's image restores to

    def slow(self) -> list[tuple[int, int]]:
        """The first half of big.bin's data (4 MiB): 0.4 s per MiB read (faultfile.SLOW), so a
        save takes ~1.6 s more, in which it can be killed or cancelled."""
        start = self.source.big_byte(0.0)
        return [(start, self.source.big_byte(0.5) - start)]

    def bad(self) -> tuple[int, int]:
        """A sector of big.bin's second half, read after the slow part."""
        return (self.source.big_byte(0.75) + 3 * SECTOR, SECTOR)

    def mounted(self, where: Path, *, bad: bool = False) -> AbstractContextManager[Path]:
        """The source as faultfile's disk.img: slow, with the bad sector when ``bad``."""
        fault = self.bad() if bad else (self.source.disk.stat().st_size, 1)  # none
        return failing(self.source.disk, where, *fault, slow=self.slow())

    def copy(self, folder: Path, name: str) -> Path:
        folder.mkdir(exist_ok=True)
        return Path(shutil.copytree(self.image, folder / name))


def saved_bytes(image: Path) -> int:
    """Bytes the checkpoint file counts as saved (data, zeros, unreadable), -1 without one."""
    try:
        point = json.loads((image / "resume" / "checkpoint.json").read_bytes())
    except (OSError, ValueError):
        return -1
    opened = [point["open"]] if point.get("open") else []
    stats = [r["stats"] for r in point["regions"]] + [o["stats"] for o in opened]
    return sum(s["raw_bytes"] + s["zero_bytes"] + s["unreadable_bytes"] for s in stats)


def restored(image: Path, work: Path) -> Path:
    target = work / f"{image.name}.restored"
    done = clonebay("restore", str(image), str(target), "--yes")
    assert done.returncode == 0, done.stderr
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_of(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in folder.rglob("*") if p.is_file()}


def killed_save(disk: Path, image: Path, *flags: str) -> None:
    """``clonebay save`` checkpointing after every chunk, killed with SIGKILL once its
    checkpoint counts saved bytes."""
    env = {**os.environ, "LC_ALL": "C", "CLONEBAY_CHECKPOINT_EVERY": "0"}
    argv = [str(CLONEBAY), "save", *flags, str(disk), str(image)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while saved_bytes(image) <= 0 and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint in 60 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err  # killed, not ended
    assert not (image / "manifest.json").exists()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Interrupted:
    work = tmp_path_factory.mktemp("tui-resume")
    rng = random.Random(1919)
    files = {"big.bin": rng.randbytes(8 * MIB), "same.bin": b"\x5a" * MIB}
    files |= {f"docs/n{i}.bin": rng.randbytes(rng.randrange(1, 200_000)) for i in range(12)}
    made = Interrupted(build_source(work, files), work / "src.image", work / "r" / "disk.image", "")
    with made.mounted(work / "mnt") as disk:
        killed_save(disk, made.image)
    made.rescued.parent.mkdir()
    with made.mounted(work / "mnt", bad=True) as disk:
        killed_save(disk, made.rescued, "--rescue")
    whole = work / "whole.image"
    assert clonebay("save", str(made.source.disk), str(whole)).returncode == 0
    return dataclasses.replace(made, whole=sha256(restored(whole, work)))


async def ask_about(pilot: Pilot[Any], name: str = "") -> ResumeModal:
    """Save: the first disk, the folder store, the image ``name`` (default: the proposed
    one); the resume question once it has read the checkpoint."""
    home = await screen_of(pilot, HomeScreen)
    await pilot.press("s")
    await pick_disk(pilot, home, row=0)
    await pick_folder_store(pilot)
    target = await screen_of(pilot, SaveTargetScreen)
    field = target.query_one("#save-name", Input)
    if name:
        field.value = name
    await pilot.press("enter")
    modal = await screen_of(pilot, ResumeModal)
    await until(pilot, "the checkpoint read", lambda: modal.text != "")
    return modal


def assert_restores_whole(image: Path, interrupted: Interrupted, work: Path) -> None:
    assert (image / "manifest.json").is_file() and not (image / "resume").exists()
    assert clonebay("verify", str(image)).returncode == 0
    target = restored(image, work)
    assert sha256(target) == interrupted.whole
    found, fsck = disk_files(target, work)
    assert found == interrupted.source.files
    assert fsck.startswith("0:"), fsck


def test_resume_goes_on_from_the_checkpoint(interrupted: Interrupted, tmp_path: Path) -> None:
    image = interrupted.copy(tmp_path / "images", "src.image")
    app = make_app([interrupted.source.disk], tmp_path / "images")
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        modal = await ask_about(pilot)
        seen["text"], seen["state"] = modal.text, modal.state
        seen["focused"] = modal.focused.id if modal.focused else None
        await pilot.click("#resume")
        seen["outcome"] = await outcome_of(pilot)
        await pilot.pause(0.3)

    run(app, script)
    saved = saved_bytes(interrupted.image)
    assert seen["state"].saved_bytes == saved > 0
    text = seen["text"]
    assert f"{image} holds a save that did not finish" in text, text
    assert f"Saved: {human_size(saved)} of data" in text, text
    assert "Begun: " in text and "Saved from: " in text and "rescue" not in text, text
    assert seen["focused"] == "resume"
    outcome = seen["outcome"]
    assert outcome.status == "done", outcome
    resumed = f"Resumed: went on from the last checkpoint ({human_size(saved)} of data had"
    assert outcome.details[0].startswith(resumed), outcome.details
    assert outcome.verify.startswith("Verified")
    assert_restores_whole(image, interrupted, tmp_path)


def test_start_again_saves_a_new_complete_image(interrupted: Interrupted, tmp_path: Path) -> None:
    image = interrupted.copy(tmp_path / "images", "src.image")
    app = make_app([interrupted.source.disk], tmp_path / "images")
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await ask_about(pilot)
        await pilot.click("#again")
        plan = await start_plan(pilot)
        seen["target"] = plan.target
        seen["outcome"] = await outcome_of(pilot)
        await pilot.pause(0.3)

    run(app, script)
    assert seen["target"] == str(image)
    outcome = seen["outcome"]
    assert outcome.status == "done" and not outcome.details[0].startswith("Resumed"), outcome
    assert_restores_whole(image, interrupted, tmp_path)


def test_a_resume_from_another_disk_is_refused_and_writes_nothing(
    interrupted: Interrupted, tmp_path: Path
) -> None:
    image = interrupted.copy(tmp_path / "images", "src.image")
    before = files_of(image)
    other = tmp_path / "other.img"  # the source's first 64 MiB: another disk, another size
    other.write_bytes(interrupted.source.disk.read_bytes()[: 64 * MIB])
    app = make_app([other], tmp_path / "images")
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        modal = await ask_about(pilot, "src.image")
        seen["text"] = modal.text
        await pilot.click("#resume")
        error = await screen_of(pilot, ErrorModal)
        seen["error"] = error.text
        await pilot.press("escape")
        progress = await screen_of(pilot, ProgressScreen)
        await until(pilot, "the failure", lambda: progress.failure is not None)
        await pilot.click("#cancel")  # "Continue"
        seen["outcome"] = await outcome_of(pilot)
        await pilot.pause(0.3)

    run(app, script)
    assert "The disk you picked is not that one" in seen["text"], seen["text"]
    assert f"{other} is not the source the interrupted job was using" in seen["error"]
    assert "nothing was written" in seen["error"]
    outcome = seen["outcome"]
    assert outcome.status == "failed" and not outcome.resume_offer, outcome
    assert outcome.next_step == f"Nothing was written: {image} is as it was."
    assert files_of(image) == before


def test_a_damaged_checkpoint_says_why_and_offers_only_start_again(
    interrupted: Interrupted, tmp_path: Path
) -> None:
    image = interrupted.copy(tmp_path / "images", "src.image")
    opened = json.loads((image / "resume" / "checkpoint.json").read_bytes())["open"]
    records = image / "resume" / f"{opened['entry']['name']}.records"
    counted = opened["records"]["length"]  # the file may hold more, written after
    assert counted > 0
    records.write_bytes(records.read_bytes()[: counted - 1])  # cut short of the checkpoint
    app = make_app([interrupted.source.disk], tmp_path / "images")
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        modal = await ask_about(pilot)
        seen["text"] = modal.text
        seen["buttons"] = {b.id: b.disabled for b in modal.query(Button)}
        await pilot.press("escape")
        seen["back"] = await screen_of(pilot, SaveTargetScreen)
        await pilot.pause(0.3)

    run(app, script)
    assert "It cannot be resumed: " in seen["text"] and "records" in seen["text"], seen["text"]
    assert seen["buttons"] == {"back": False, "again": False, "resume": True}


def test_a_cancelled_save_offers_resume_on_its_result(
    interrupted: Interrupted, tmp_path: Path
) -> None:
    image = interrupted.copy(tmp_path / "images", "disk.image")  # faultfile's disk.img
    seen: dict[str, Any] = {}
    with interrupted.mounted(tmp_path / "mnt") as disk:
        app = make_app([disk], tmp_path / "images")

        async def script(pilot: Pilot[Any]) -> None:
            await ask_about(pilot)
            await pilot.click("#resume")
            first = await cancel_at_once(pilot)
            seen["first"] = first.outcome
            seen["second"] = await resume_on(pilot, first)
            await pilot.pause(0.3)

        run(app, script)
    first, second = seen["first"], seen["second"]
    assert first.status == "cancelled" and first.resume_offer, first
    assert "Resume goes on from there" in first.next_step
    assert second.status == "done" and second.details[0].startswith("Resumed"), second
    assert_restores_whole(image, interrupted, tmp_path)


def test_a_resumed_rescue_lists_what_stayed_unreadable(
    interrupted: Interrupted, tmp_path: Path
) -> None:
    """The killed rescue resumed in the TUI (with its map): the Result lists the one bad
    sector, the map marks exactly it, and the image restores with zeros there only."""
    image, bad = interrupted.rescued, interrupted.bad()
    seen: dict[str, Any] = {}
    with interrupted.mounted(tmp_path / "mnt", bad=True) as disk:
        app = make_app([disk], image.parent)

        async def script(pilot: Pilot[Any]) -> None:
            modal = await ask_about(pilot)
            seen["text"] = modal.text
            await pilot.click("#resume")
            seen["outcome"] = await outcome_of(pilot)
            await pilot.pause(0.3)

        run(app, script)
    assert f"It is a rescue: its map is {image}.map." in seen["text"], seen["text"]
    outcome = seen["outcome"]
    assert outcome.status == "errors", outcome
    details = "\n".join(outcome.details)
    assert details.startswith("Resumed: ") and f"(map: {image}.map)" in details, details
    assert f"512 bytes at offset {bad[0] - interrupted.source.p1} of p1" in details, details
    assert f"unreadable sectors hit {big_bin_hit(interrupted.source, [bad])}" in outcome.warnings
    assert [(a, n) for a, n, s in read_map(Path(f"{image}.map")) if s == "-"] == [bad]
    files, fsck = restored_files(image, tmp_path)
    assert fsck.startswith("0:"), fsck
    assert_files_but_bad(interrupted.source, files, [bad])
