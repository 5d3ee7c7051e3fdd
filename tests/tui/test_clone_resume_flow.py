"""An interrupted clone in the TUI: picking the same source and target again asks whether to
resume it, and a clone that stopped after a checkpoint offers Resume on its Result.

The interrupted clones are real: the ``clonebay clone`` CLI (plain, and ``--rescue``) reads a
GPT/ext4 disk (tests/engine/test_rescue.py builds it) through tests/faultfile.py with its
partition slowed down, checkpointing after every chunk (CLONEBAY_CHECKPOINT_EVERY=0), and is
killed with SIGKILL once its journal holds two written runs in pass 1. Each test drives the TUI
with Pilot over copies of the half-written target and of the journal folder ($CLONEBAY_STATE)
and the rescue map folder ($CLONEBAY_RESCUE_MAPS). The journals are named after the disks
(files: their names), so the TUI's source is the same disk under the same name, ``disk.img``:
a hard link to the built disk, or faultfile's slow one where a job must be cancelled in time.

Checked against known truth: the question shows the runs the journal file holds (its records
read here) of the used blocks dumpe2fs counts; a resumed, restarted, cancelled-then-resumed or
resumed rescue clone leaves the target byte-identical (sha256) to an uninterrupted CLI clone of
the same source onto a fresh file, and its journal gone; a target that is not the one the
journal names is refused before anything is written, with only Start again offered.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button

from clonebay.engine import Grow
from clonebay.tui.screens.clone_resume_ask import CloneResumeModal
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.screens.plan import PlanScreen
from clonebay.tui.screens.targets_picker import TargetsPickerScreen
from clonebay.units import human_size
from tests.diskcheck import extract
from tests.edgedisks import CLONEBAY, MIB, layout, sha256
from tests.engine.test_rescue import SECTOR, Source, build_source
from tests.faultfile import failing
from tests.tui.helpers import cancel_at_once, resume_on, run, screen_of, until
from tests.tui.test_flows import (
    confirm_yes,
    make_app,
    next_picker,
    outcome_of,
    pick_disk,
    start_plan,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="FUSE mounts need root"
)
RECORD = struct.Struct("<HBQQ16s")  # a journal run (engine/target/journal.py): region, zeros,
# offset, length, xxh3-128
PLAIN, RESCUED, KEPT = "cut.img", "rcut.img", "kcut.img"  # the killed clones' targets: plain,
# --rescue, and --grow none onto a larger file (BIGGER bytes)
BIGGER = 128 * MIB


@dataclass(frozen=True)
class Interrupted:
    source: Source
    work: Path  # the killed clones' targets, state/ and maps/ (kept as they are)
    whole: str = ""  # sha256 of an uninterrupted clone of the source onto a fresh file
    kept: str = ""  # the same with --grow none onto a fresh file of BIGGER bytes
    used: int = 0  # bytes of p1's used blocks, as dumpe2fs counts them

    def slow(self) -> list[tuple[int, int]]:
        """p1 slowed down (faultfile.SLOW, 0.4 s per MiB read): a pass takes seconds."""
        return [(self.source.p1, 64 * MIB)]

    def mounted(self, where: Path) -> Any:
        """The source as faultfile's disk.img: slow, with no bad sector."""
        return failing(
            self.source.disk, where, self.source.disk.stat().st_size, 1, slow=self.slow()
        )

    def setup(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        """Copies of the killed clones' targets and of the journal and map folders in ``tmp``,
        the app's $CLONEBAY_STATE and $CLONEBAY_RESCUE_MAPS; returns the source as
        ``disk.img`` (a hard link)."""
        for folder in ("state", "maps"):
            shutil.copytree(self.work / folder, tmp / folder)
        monkeypatch.setenv("CLONEBAY_STATE", str(tmp / "state"))
        monkeypatch.setenv("CLONEBAY_RESCUE_MAPS", str(tmp / "maps"))
        for name in (PLAIN, RESCUED, KEPT):
            shutil.copyfile(self.work / name, tmp / name)
        (tmp / "fast").mkdir()
        source = tmp / "fast" / "disk.img"
        os.link(self.source.disk, source)
        return source


def env(work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LC_ALL": "C",
        "CLONEBAY_CHECKPOINT_EVERY": "0",
        "CLONEBAY_STATE": str(work / "state"),
        "CLONEBAY_RESCUE_MAPS": str(work / "maps"),
    }


def journal(state: Path, target: str) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The journal of the clone onto ``target`` (a file name): its state and its runs
    (region, length), read as its format says, up to the length the state file counts."""
    name = f"clone-disk_img-to-{target.replace('.', '_')}"
    try:
        body = json.loads((state / f"{name}.json").read_bytes())
    except (OSError, ValueError):
        return {}, []
    data = (state / f"{name}.written").read_bytes()[: body["written_bytes"]]
    runs = [(body["regions"][r[0]], r[3]) for r in RECORD.iter_unpack(data)]
    return body["state"], runs


def killed_clone(disk: Path, target: Path, work: Path, *flags: str) -> None:
    """``clonebay clone`` checkpointing after every chunk, killed with SIGKILL once its journal
    holds two runs and says pass 1 (stage copy)."""
    argv = [str(CLONEBAY), "clone", *flags, str(disk), str(target), "--yes"]
    proc = subprocess.Popen(argv, env=env(work), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while True:
        state, runs = journal(work / "state", target.name)
        if state.get("stage") == "copy" and len(runs) >= 2:
            break
        assert proc.poll() is None, f"the clone ended before two runs: {proc.communicate()}"
        assert time.monotonic() < deadline, "no two runs in 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err  # killed, not ended


def used_bytes(disk: Path, work: Path) -> int:
    """p1's used blocks as dumpe2fs counts them (block count less free blocks)."""
    start, sectors = layout(disk)[1]
    p1 = extract(disk, start * SECTOR, sectors * SECTOR, work / "p1.img")
    text = subprocess.run(["dumpe2fs", "-h", str(p1)], capture_output=True, text=True, check=True)
    p1.unlink()
    head = dict(line.split(":", 1) for line in text.stdout.splitlines() if ":" in line)
    count, free = int(head["Block count"]), int(head["Free blocks"])
    return (count - free) * int(head["Block size"])


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Interrupted:
    work = tmp_path_factory.mktemp("tui-clone-resume")
    for folder in ("state", "maps"):
        (work / folder).mkdir()
    rng = random.Random(2020)
    # p1's used blocks (~33 MiB) are twice what a killed clone has written (it commits the 4 MiB
    # runs its readers had in flight: 2 to 4 of them), so that a resumed clone still reads for
    # seconds (0.4 s per MiB) when a test cancels it
    files = {"big.bin": rng.randbytes(24 * MIB), "same.bin": b"\x5a" * MIB}
    files |= {f"docs/n{i}.bin": rng.randbytes(rng.randrange(1, 200_000)) for i in range(12)}
    made = Interrupted(build_source(work, files), work)
    whole, kept = work / "whole.img", work / "kept.img"
    for target, flags in ((whole, ()), (kept, ("--grow", "none"))):
        if flags:
            sized(target, BIGGER)
        argv = [str(CLONEBAY), "clone", *flags, str(made.source.disk), str(target), "--yes"]
        done = subprocess.run(argv, env=env(work), capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    assert not list((work / "state").iterdir())  # they ended well: no journal left
    with made.mounted(work / "mnt") as disk:
        killed_clone(disk, work / PLAIN, work)
        killed_clone(disk, work / RESCUED, work, "--rescue")
        killed_clone(disk, sized(work / KEPT, BIGGER), work, "--grow", "none")
    assert [p.name for p in (work / "maps").iterdir()] == ["disk.img.map"]
    used = used_bytes(made.source.disk, work)
    return dataclasses.replace(made, whole=sha256(whole), kept=sha256(kept), used=used)


def sized(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


async def pick_both(pilot: Pilot[Any]) -> None:
    """Clone: the first disk onto the second (alone)."""
    home = await screen_of(pilot, HomeScreen)
    await pilot.press("c")
    source = await pick_disk(pilot, home, row=0)
    await next_picker(pilot, source)
    await pilot.press("down", "enter")


async def ask_about(pilot: Pilot[Any]) -> CloneResumeModal:
    """The source and the target picked; the question once it has read the journal."""
    await pick_both(pilot)
    modal = await screen_of(pilot, CloneResumeModal)
    await until(pilot, "the journal read", lambda: modal.text != "")
    return modal


def resumed_in_tui(source: Path, target: Path, folder: Path) -> dict[str, Any]:
    """The clone of ``source`` onto ``target`` in the TUI, resumed at the question (and yes
    typed at the Confirm modal): what the question said and read, what had the focus, and
    the Outcome."""
    app = make_app([source, target], folder)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        modal = await ask_about(pilot)
        seen["text"], seen["state"] = modal.text, modal.state
        seen["focused"] = modal.focused.id if modal.focused else None
        await pilot.click("#resume")
        await confirm_yes(pilot)  # the target is written: the Confirm modal first
        seen["outcome"] = await outcome_of(pilot)
        await pilot.pause(0.3)

    run(app, script)
    return seen


def assert_whole(target: Path, whole: str, state: Path) -> None:
    assert sha256(target) == whole
    name = f"clone-disk_img-to-{target.name.replace('.', '_')}"
    assert not list(state.glob(f"{name}.*"))  # done: nothing left to resume
    # the other killed clones' journals, as they were (and the temporary state file of one
    # that the kill -9 caught between its write and its rename)
    assert len([p for p in state.iterdir() if p.suffix != ".tmp"]) == 4


def test_resume_goes_on_from_the_checkpoint(
    interrupted: Interrupted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = interrupted.setup(tmp_path, monkeypatch)
    target = tmp_path / PLAIN
    _, runs = journal(tmp_path / "state", target.name)
    held = sum(n for _, n in runs)
    seen = resumed_in_tui(source, target, tmp_path)
    assert {r for r, _ in runs} == {"p1"} and len(runs) >= 2  # p1's, in pass 1
    state = seen["state"]
    assert (state.written_bytes, state.planned_bytes, state.rescue) == (
        held,
        interrupted.used,
        False,
    )
    text = seen["text"]
    assert f"A clone of {source} onto {target} did not finish" in text, text
    share = held * 100 // interrupted.used
    on_target = f"On the target: {human_size(held)} of {human_size(interrupted.used)} of data,"
    assert f"{on_target} {share} %" in text, text
    assert "It stopped while copying the partitions' data (at p1)." in text, text
    assert "Cloned from: " in text and "rescue" not in text, text
    assert seen["focused"] == "resume"
    outcome = seen["outcome"]
    assert outcome.status == "done", outcome
    resumed = f"Resumed: went on from the last checkpoint ({human_size(held)} of data was on"
    assert outcome.details[0].startswith(resumed), outcome.details
    assert outcome.verify.startswith("Verified")
    assert_whole(target, interrupted.whole, tmp_path / "state")


def test_start_again_clones_anew(
    interrupted: Interrupted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = interrupted.setup(tmp_path, monkeypatch)
    target = tmp_path / PLAIN
    app = make_app([source, target], tmp_path)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await ask_about(pilot)
        await pilot.click("#again")
        plan = await start_plan(pilot)
        seen["target"] = plan.target
        await confirm_yes(pilot)
        seen["outcome"] = await outcome_of(pilot)
        await pilot.pause(0.3)

    run(app, script)
    assert seen["target"] == str(target)
    outcome = seen["outcome"]
    assert outcome.status == "done" and not outcome.details[0].startswith("Resumed"), outcome
    assert_whole(target, interrupted.whole, tmp_path / "state")


def test_another_target_is_refused_and_only_start_again_offered(
    interrupted: Interrupted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal's target grown by 1 MiB is not the target the clone was writing: said
    before anything is written; Back returns to the target picker."""
    source = interrupted.setup(tmp_path, monkeypatch)
    target = tmp_path / PLAIN
    with open(target, "r+b") as f:
        f.truncate(target.stat().st_size + MIB)
    before = sha256(target)
    app = make_app([source, target], tmp_path)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        modal = await ask_about(pilot)
        seen["text"] = modal.text
        seen["buttons"] = {b.id: b.disabled for b in modal.query(Button)}
        seen["focused"] = modal.focused.id if modal.focused else None
        await pilot.press("escape")
        await screen_of(pilot, TargetsPickerScreen)
        await pilot.pause(0.3)

    run(app, script)
    said = f"It cannot be resumed: {target} is not the target the interrupted job was using"
    assert said in seen["text"] and "nothing was written" not in seen["text"], seen["text"]
    assert seen["buttons"] == {"back": False, "again": False, "resume": True}
    assert seen["focused"] == "back"
    assert sha256(target) == before and len(list((tmp_path / "state").iterdir())) == 6


def test_a_cancelled_resume_offers_resume_on_its_result(
    interrupted: Interrupted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupted.setup(tmp_path, monkeypatch)
    target = tmp_path / PLAIN
    seen: dict[str, Any] = {}
    with interrupted.mounted(tmp_path / "mnt") as disk:  # slow: the cancel comes in time
        app = make_app([disk, target], tmp_path)

        async def script(pilot: Pilot[Any]) -> None:
            await ask_about(pilot)
            await pilot.click("#resume")
            await confirm_yes(pilot)
            first = await cancel_at_once(pilot)
            seen["first"] = first.outcome
            seen["journal"] = journal(tmp_path / "state", target.name)
            seen["second"] = await resume_on(pilot, first)
            await pilot.pause(0.3)

        run(app, script)
    first, second = seen["first"], seen["second"]
    assert first.status == "cancelled" and first.resume_offer, first
    assert (
        "Resume goes on from there" in first.next_step and "must not be booted" in first.next_step
    )
    state, runs = seen["journal"]
    assert state.get("stage") == "copy" and len(runs) >= 2  # the checkpoint is kept
    assert second.status == "done" and second.details[0].startswith("Resumed"), second
    assert_whole(target, interrupted.whole, tmp_path / "state")


def test_a_rescue_resumes_as_a_rescue(
    interrupted: Interrupted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The killed ``clone --rescue``: its map's command line names this clone, so the question
    says it is a rescue and Resume goes on with the map (no sector is bad: the target ends as
    the plain clone's)."""
    source = interrupted.setup(tmp_path, monkeypatch)
    target = tmp_path / RESCUED
    rescue_map = tmp_path / "maps" / "disk.img.map"
    seen = resumed_in_tui(source, target, tmp_path)
    assert f"It is a rescue: its map is {rescue_map}." in seen["text"], seen["text"]
    outcome = seen["outcome"]
    assert outcome.status == "done", outcome
    details = "\n".join(outcome.details)
    assert details.startswith("Resumed: "), details
    assert f"Rescue: every used byte was read (map: {rescue_map})." in details, details
    assert_whole(target, interrupted.whole, tmp_path / "state")


def test_no_journal_goes_straight_to_the_plan(
    interrupted: Interrupted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target no clone of this source left a journal for: no question."""
    source = interrupted.setup(tmp_path, monkeypatch)
    fresh = sized(tmp_path / "fresh.img", source.stat().st_size)
    app = make_app([source, fresh], tmp_path)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await pick_both(pilot)
        seen["plan"] = await screen_of(pilot, PlanScreen)
        await pilot.pause(0.3)

    run(app, script)
    assert seen["plan"].target == str(fresh)


def test_the_grow_mode_is_found_and_kept(
    interrupted: Interrupted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clone killed with --grow none onto a larger file: the default plan (grown) is not
    the one its journal was made for; the question finds the one that is and Resume keeps
    it: the target ends as an uninterrupted --grow none clone's, p1 as large as the source's."""
    source = interrupted.setup(tmp_path, monkeypatch)
    target = tmp_path / KEPT
    seen = resumed_in_tui(source, target, tmp_path)
    assert seen["state"].grow is Grow.NONE and seen["state"].resumable, seen["state"]
    assert seen["outcome"].status == "done", seen["outcome"]
    assert layout(target)[1] == layout(interrupted.source.disk)[1]
    assert_whole(target, interrupted.kept, tmp_path / "state")
