"""Unlocking a BitLocker volume in the TUI, on the real BitLocker disk of tests/bitlocker_disks.py
(a volume made by Windows, a valid NTFS inside; root: dislocker-fuse and ntfs-3g are the oracle).

Clone: the Plan names p1 locked and copied whole with its protectors and recovery key ID; Unlock
with a wrong recovery password is refused in the prober's words, the modal stays and the session
keeps nothing; the right password opens it, the plan is made again (p1's used clusters only) and
the clone copies them: the target's p1 opens with the same password in dislocker and its files
hash as built, and the job copied a fraction of the 100 MiB volume. No screen ever shows a secret
(every screen is exported and searched). The save plan, the disk details and a hibernated
Windows' note in full are checked too."""

from __future__ import annotations

import hashlib
import html
import os
import re
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Input, Static

from clonebay.engine import jobs
from clonebay.engine.layout.states import HIBERNATED_WORDS
from clonebay.fs.keyring import Keyring
from clonebay.testdisks import ntfs as ntfsdisk
from clonebay.tui.app import ClonebayApp
from clonebay.tui.jobs import JobKind
from clonebay.tui.screens.browse_extract import ExtractScreen
from clonebay.tui.screens.browse_tree import BrowseTreeScreen
from clonebay.tui.screens.disk_details import DiskDetailsScreen
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.screens.plan import PlanScreen
from clonebay.tui.screens.unlock import UnlockModal
from clonebay.tui.services import Services
from clonebay.tui.unlocking import recovery_password
from clonebay.tui.widgets.locked_panel import LockedPanel
from tests.bitlocker_disks import NTFS_BYTES, Source, bitlocker_disk, read_tree
from tests.edgedisks import gpt_disk, layout, put
from tests.tui.helpers import run, screen_of, type_into, until
from tests.tui.test_browse import browse_image, our_mounts
from tests.tui.test_browse_snapshots import cursor_to
from tests.tui.test_flows import confirm_yes, outcome_of, pick_disk

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="FUSE (dislocker, ntfs-3g) needs root")
MIB = 1 << 20
WRONG = "-".join(["000000"] * 8)  # well formed (every group a multiple of 11), opens nothing


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return bitlocker_disk(tmp_path_factory.mktemp("bitlocker"))


def blank(path: Path, size: int = 200 * MIB) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def screen_text(app: App[Any]) -> str:
    """Everything the terminal shows now, without markup or white space."""
    svg = app.export_screenshot()
    return re.sub(r"\s+", "", html.unescape(re.sub(r"<[^>]+>", "", svg)))


def panel_text(screen: PlanScreen | DiskDetailsScreen) -> str:
    return str(screen.query_one(LockedPanel).query_one(".locked-text", Static).render())


class Seen:
    """Screens exported along the way, to be searched for the secrets."""

    def __init__(self, app: App[Any]) -> None:
        self.app = app
        self.shots: list[str] = []

    def shot(self) -> None:
        self.shots.append(screen_text(self.app))


def secrets_of(source: Source) -> list[str]:
    rec = source.recovery
    return [source.volume.password, rec, rec.replace("-", ""), WRONG, WRONG.replace("-", "")]


async def planned(pilot: Pilot[Any], plan: PlanScreen) -> None:
    """Until ``plan`` is the screen and shows a plan (its Unlock buttons mounted too)."""
    await until(pilot, "the plan", lambda: pilot.app.screen is plan and plan.view is not None)
    await pilot.pause(0.3)


async def try_key(pilot: Pilot[Any], modal: UnlockModal, secret: str) -> None:
    """Type ``secret`` into the modal's masked field and press Enter; wait for the answer."""
    said = modal.said
    await type_into(pilot, "#unlock-secret", secret)
    await pilot.press("enter")

    def answered() -> bool:
        return not modal.trying and (modal.said != said or not modal.is_attached)

    await until(pilot, "the key tried", answered)


def test_unlock_in_the_plan_then_clone_used_clusters(source: Source, tmp_path: Path) -> None:
    target = blank(tmp_path / "target.img")
    services = Services(
        [str(source.disk), str(target)], machine_disks=False, image_dir=str(tmp_path)
    )
    app = ClonebayApp(services, watch_disks=False)
    seen = Seen(app)
    got: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        home = await screen_of(pilot, HomeScreen)
        await pilot.press("c")
        await pick_disk(pilot, await pick_disk(pilot, home, row=0), row=1)
        plan = await screen_of(pilot, PlanScreen)
        await planned(pilot, plan)
        got["locked"] = panel_text(plan)
        got["totals_locked"] = dict(plan.view.totals) if plan.view else {}
        seen.shot()

        await pilot.press("u")
        modal = await screen_of(pilot, UnlockModal)
        await pilot.pause(0.3)
        got["modal"] = screen_text(app)
        await try_key(pilot, modal, WRONG)
        await pilot.pause(0.3)
        seen.shot()
        got["refused"] = modal.said
        got["still_modal"] = pilot.app.screen is modal
        got["field"] = modal.query_one("#unlock-secret", Input).value
        got["kept_after_wrong"] = repr(services.keyring), bool(services.keyring)

        await type_into(pilot, "#unlock-secret", source.volume.password[:3])
        seen.shot()  # while typing: masked
        await type_into(pilot, "#unlock-secret", source.volume.password[3:])
        seen.shot()
        await pilot.press("enter")
        await planned(pilot, plan)
        got["unlocked"] = panel_text(plan)
        got["totals_unlocked"] = dict(plan.view.totals) if plan.view else {}
        got["unlock_offered"] = plan.check_action("unlock", ())
        seen.shot()

        start = plan.query_one("#start")
        start.focus()
        await pilot.press("enter")
        await confirm_yes(pilot)
        got["outcome"] = await outcome_of(pilot)
        await pilot.pause(0.3)
        seen.shot()

    run(app, script)
    rec_id = "64311DEA-4587-4029-924A-BA299647998E"  # the shipped volume's (bitlocker_data.py)
    assert "p1, BitLocker, 100.0 MiB: locked, copied whole" in got["locked"]
    assert "password {3E55195C-8811-4D9B-97B4-2B9E5F8F5384}" in got["locked"]
    assert f"Recovery key ID {rec_id}: look it up at aka.ms/myrecoverykey" in got["locked"]
    assert got["totals_locked"]["1"] == 100 * MIB
    assert rec_id in got["modal"] and "aka.ms/myrecoverykey" in got["modal"]
    assert "partition1at1.0MiB,100.0MiB,BitLocker" in got["modal"]

    assert got["still_modal"] and got["field"] == ""
    assert got["refused"].startswith("Not unlocked: the recovery password does not unlock this")
    assert got["kept_after_wrong"] == (
        "Keyring(0 password(s), 0 recovery password(s), 0 startup key(s), 0 key file(s),"
        " decrypt=False)",
        False,
    )
    assert services.keyring.passwords == [source.volume.password]

    assert "unlocked with its password" in got["unlocked"]
    assert "the used clusters of its ntfs, still encrypted" in got["unlocked"]
    assert got["unlock_offered"] is False
    p1_bytes = got["totals_unlocked"]["1"]
    assert source.used <= p1_bytes < 20 * MIB  # the NTFS's used clusters and BitLocker's areas

    outcome = got["outcome"]
    assert outcome.ok, outcome
    copied = next(d for d in outcome.details if d.endswith(" copied."))
    number, unit = copied.split()[:2]
    assert unit == "MiB" and float(number) < 40, copied  # a whole p1 alone would be 100 MiB
    assert read_tree(target, source.volume.password, NTFS_BYTES, offset=source.start) == (
        source.sums
    )

    for shot in [*seen.shots, got["modal"]]:
        for secret in secrets_of(source):
            assert secret not in shot


def test_save_plan_unlocks_with_a_recovery_password_without_dashes(
    source: Source, tmp_path: Path
) -> None:
    """The save's Plan offers Unlock too; the recovery password typed as 48 digits opens it."""
    digits = source.recovery.replace("-", "")
    assert recovery_password(digits) == source.recovery
    services = Services([str(source.disk)], machine_disks=False, image_dir=str(tmp_path))
    app = ClonebayApp(services, watch_disks=False)
    got: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        plan = PlanScreen(services, JobKind.SAVE, str(source.disk), str(tmp_path / "new.image"))
        await app.push_screen(plan)
        await planned(pilot, plan)
        got["before"] = dict(plan.view.totals) if plan.view else {}
        await pilot.click(".unlock")
        modal = await screen_of(pilot, UnlockModal)
        modal.query_one("#unlock-secret", Input).value = digits  # as pasted (typing is slow)
        await pilot.pause()
        got["hint"] = str(modal.query_one("#unlock-status", Static).render())
        await pilot.press("enter")
        await planned(pilot, plan)
        got["after"] = dict(plan.view.totals) if plan.view else {}
        got["panel"] = panel_text(plan)
        got["shot"] = screen_text(app)

    run(app, script)
    assert got["hint"] == "48 digits: tried as the recovery password."
    assert got["before"]["p1"] == 100 * MIB
    assert source.used <= got["after"]["p1"] < 20 * MIB
    assert "unlocked with its recovery password" in got["panel"]
    assert services.keyring.recovery_passwords == [source.recovery]
    assert digits not in got["shot"] and source.recovery not in got["shot"]


def test_disk_details_unlock_with_a_startup_key_file_that_does_not_fit(
    source: Source, tmp_path: Path
) -> None:
    """The disk details name the locked volume and offer Unlock; a file that is not a .BEK is
    refused in words and the volume stays locked; Escape leaves it so."""
    bogus = tmp_path / "not-a-key.BEK"
    bogus.write_bytes(b"\0" * 200)
    services = Services([str(source.disk)], machine_disks=False, image_dir=str(tmp_path))
    app = ClonebayApp(services, watch_disks=False)
    got: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        (disk,) = services.disks()
        details = DiskDetailsScreen(services, disk)
        await app.push_screen(details)
        await until(pilot, "the report", lambda: details.report is not None)
        await pilot.pause(0.3)
        got["panel"] = panel_text(details)
        await pilot.press("u")
        modal = await screen_of(pilot, UnlockModal)
        modal.query_one("#unlock-file", Input).value = str(bogus)
        await pilot.press("enter")
        await until(pilot, "the refusal", lambda: bool(modal.said))
        got["said"] = modal.said
        await pilot.press("escape")
        await until(pilot, "the details again", lambda: pilot.app.screen is details)
        got["after"] = panel_text(details)

    run(app, script)
    assert "p1, BitLocker, 100.0 MiB: locked, copied whole" in got["panel"]
    assert got["said"].startswith(f"Not unlocked: {bogus.name}") or str(bogus) in got["said"]
    assert "locked, copied whole" in got["after"]
    assert not services.keyring


def test_plan_shows_a_hibernated_windows_note_in_full(tmp_path: Path) -> None:
    disk = gpt_disk(tmp_path / "hib.img", 160 * MIB, "1:2048:+96M", typecodes=["1:0700"])
    start, sectors = layout(disk)[1]
    hib = ntfsdisk.make_ntfs(tmp_path / "p1.img", sectors * 512, start_sector=start)
    ntfsdisk.add_hiberfil(hib, b"HIBR")
    put(disk, hib, start * 512)
    target = blank(tmp_path / "target.img")
    services = Services([str(disk)], machine_disks=False, image_dir=str(tmp_path))
    app = ClonebayApp(services, watch_disks=False)
    got: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        plan = PlanScreen(services, JobKind.CLONE, str(disk), str(target), target_size=200 * MIB)
        await app.push_screen(plan)
        await planned(pilot, plan)
        got["panel"] = panel_text(plan)
        got["shot"] = screen_text(app)

    run(app, script)
    assert f"p1: {HIBERNATED_WORDS}" in got["panel"]
    assert re.sub(r"\s+", "", HIBERNATED_WORDS) in got["shot"]  # on the screen, every word


def test_browse_asks_for_the_key_of_a_locked_partition(source: Source, tmp_path: Path) -> None:
    """Browse → an image of the BitLocker disk → p1: the Unlock modal names its recovery key ID
    (as the image recorded it); a wrong password is refused in the engine's words; the right
    password opens the tree, and the files extracted from it hash as built."""
    images = tmp_path / "images"
    images.mkdir()
    image = images / "bitlocker.image"
    jobs.save(
        str(source.disk),
        str(image),
        jobs.SaveOptions(keys=Keyring(passwords=[source.volume.password])),
    )
    dest = tmp_path / "out"
    services = Services([], machine_disks=False, image_dir=str(images))
    app = ClonebayApp(services, watch_disks=False)
    seen = Seen(app)
    got: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        parts = await browse_image(pilot, image)
        assert parts.highlighted() == "p1"
        await pilot.press("enter")
        modal = await screen_of(pilot, UnlockModal)
        await pilot.pause(0.3)
        got["modal"] = screen_text(app)
        await try_key(pilot, modal, "not-it")
        got["refused"] = modal.said
        seen.shot()
        await try_key(pilot, modal, source.volume.password)
        tree = await screen_of(pilot, BrowseTreeScreen)
        await until(pilot, "the root folder", lambda: tree.reading is None and bool(tree.entries))
        got["root"] = set(tree.entries)
        await cursor_to(pilot, tree, "Users")
        await pilot.press("space", "x")
        extract = await screen_of(pilot, ExtractScreen)
        extract.query_one("#extract-dest", Input).value = ""
        await type_into(pilot, "#extract-dest", str(dest))
        await pilot.press("enter")
        await until(pilot, "the summary", lambda: extract.summary is not None)
        seen.shot()

    run(app, script)
    assert "64311DEA-4587-4029-924A-BA299647998E" in got["modal"]
    assert "Image" in got["modal"] and "partition1at1.0MiB,100.0MiB,BitLocker" in got["modal"]
    assert "BitLocker not unlocked: the password does not unlock" in got["refused"]
    assert {"Users", "Windows", "ProgramData"} <= got["root"]
    users = {rel: sums for rel, sums in source.sums.items() if rel.startswith("Users/")}
    pulled = {
        str(f.relative_to(dest)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in dest.rglob("*")
        if f.is_file()
    }
    assert pulled == users and len(users) == 3
    assert services.keyring.passwords == [source.volume.password]
    assert our_mounts() == []
    for shot in [*seen.shots, got["modal"]]:
        for secret in [*secrets_of(source), "not-it"]:
            assert secret not in shot
