""" "Where are the images?" (root: loop devices and mounts). A store disk (ext4 on a loop device,
an image saved into it by ``clonebay save`` first) and the demo disk attached as the save's
source: the screen lists the store with its free space (statvfs of the mounted filesystem) and
its image, greys the source's partitions with the guard's reason, and picking the store leads
to the save screen in its mounted folder; the save lands there, ``clonebay verify`` passes on
it, and the store is unmounted when the app exits. The network form's "Test connection" to a
port where nothing listens says so in plain words, within the engine's deadlines."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, RadioButton, RadioSet

from clonebay.engine.stores import listing, sftp
from clonebay.system import loopdev
from clonebay.system.stick import IMAGES_LABEL
from clonebay.system.udev import list_disks
from clonebay.testdisks import disks
from clonebay.testdisks.files import sparse_file
from clonebay.tui.app import ClonebayApp
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.screens.host_key import HostKeyModal
from clonebay.tui.screens.image_picker import ImagePickerScreen
from clonebay.tui.screens.network_store import NetworkStoreScreen
from clonebay.tui.screens.result import ResultScreen
from clonebay.tui.screens.save_target import SaveTargetScreen
from clonebay.tui.screens.stores import NETWORK_ROW, StoresScreen
from clonebay.tui.services import Services
from tests.stores.cli import clonebay
from tests.stores.conftest import PASSWORD, USER, SshServer, ssh_server
from tests.tui.helpers import run, screen_of, until
from tests.tui.test_flows import pick_disk, start_plan

__all__ = ["ssh_server"]  # the fixture, shared with the CLI's store tests

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root")

MIB = 1 << 20
STORES_DIR = "/run/clonebay/stores/"


@dataclass
class Bench:
    source: str  # the demo disk on a loop device, its partitions visible
    store: str  # a whole-disk ext4 store on a loop device
    label: str


def mounts_of(device: str) -> list[str]:
    """Where ``device`` is mounted now (by its device number, as the kernel lists it)."""
    number = os.stat(device).st_rdev
    wanted = f"{os.major(number)}:{os.minor(number)}"
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return [ln.split()[4] for ln in f if ln.split()[2] == wanted]


@pytest.fixture
def bench(
    demo_disk: disks.BuiltDisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bench]:
    label = f"CBTUI{secrets.token_hex(2).upper()}"
    backing = sparse_file(tmp_path / "store.img", 256 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-L", label, str(backing)], check=True)
    tiny = sparse_file(tmp_path / "tiny.img", 32 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-L", "tiny", str(tiny)], check=True)
    store = loopdev.attach(str(backing))
    source = loopdev.attach(str(demo_disk.path), partitions=True, read_only=True)
    try:
        subprocess.run(["udevadm", "settle", "--timeout=20"], check=False)
        saved = clonebay("save", str(tiny), f"disk:{store}/first.image")
        assert saved.returncode == 0, saved.stderr
        # only these two disks are the machine's: listing mounts every partition it finds for a
        # moment, and the loop devices of tests running beside this one are none of its business
        ours = (store, source)
        monkeypatch.setattr(
            listing, "list_disks", lambda: [d for d in list_disks() if d.path in ours]
        )
        yield Bench(source, store, label)
    finally:
        loopdev.detach(source, partitions=True)
        loopdev.detach(store)


def store_app(bench: Bench, tmp_path: Path) -> ClonebayApp:
    services = Services(
        [bench.source], machine_disks=False, list_stores=True, image_dir=str(tmp_path)
    )
    return ClonebayApp(services, watch_disks=False)


async def listed(pilot: Pilot[Any]) -> StoresScreen:
    screen = await screen_of(pilot, StoresScreen)
    await until(pilot, "the partitions", lambda: screen.listing is not None)
    await pilot.pause()
    return screen


async def move_to(pilot: Pilot[Any], screen: StoresScreen, key: str) -> None:
    """Put the cursor on the row ``key``."""
    table = screen.query_one("#stores", DataTable)
    steps = list(screen.rows).index(key) - table.cursor_row
    for _ in range(abs(steps)):
        await pilot.press("down" if steps > 0 else "up")


def test_save_into_a_store_partition(bench: Bench, tmp_path: Path) -> None:
    app = store_app(bench, tmp_path)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        home = await screen_of(pilot, HomeScreen)
        await pilot.press("s")
        await pick_disk(pilot, home, row=0)
        screen = await listed(pilot)
        seen["rows"] = dict(screen.rows)
        greyed = next(k for k, r in screen.rows.items() if r.refusal and "lies on" in r.refusal)
        await move_to(pilot, screen, greyed)
        await pilot.press("enter")  # refused: the screen stays
        await pilot.pause()
        seen["stayed"] = pilot.app.screen is screen
        await move_to(pilot, screen, f"disk:{bench.store}")
        await pilot.press("enter")
        target = await screen_of(pilot, SaveTargetScreen)
        seen["folder"] = target.folder
        seen["mounted"] = mounts_of(bench.store)
        await pilot.press("enter")  # the proposed name, in the store's folder
        plan = await start_plan(pilot)
        seen["image"] = plan.target
        seen["outcome"] = (await screen_of(pilot, ResultScreen)).outcome
        seen["mounted_after_job"] = mounts_of(bench.store)
        seen["saved"] = (Path(plan.target) / "manifest.json").is_file()

    run(app, script)
    rows = seen["rows"]
    store = rows[f"disk:{bench.store}"].info
    assert store is not None and store.usable and store.label == bench.label
    assert store.images == ["first.image"]
    assert store.free is not None and 150 * MIB < store.free < 256 * MIB
    greyed = [
        r for r in rows.values() if r.info is not None and r.info.device.startswith(bench.source)
    ]
    assert greyed and all(not r.info.usable for r in greyed)
    assert any("which the job reads or writes" in r.refusal for r in greyed)
    assert seen["stayed"]
    assert seen["folder"].startswith(STORES_DIR) and seen["mounted"] == [seen["folder"]]
    assert seen["outcome"].ok, seen["outcome"]
    assert Path(seen["image"]).parent == Path(seen["folder"])
    assert seen["saved"] and seen["mounted_after_job"] == [seen["folder"]]  # kept mounted
    assert mounts_of(bench.store) == [], "the store stayed mounted after the app exited"
    name = Path(seen["image"]).name
    checked = clonebay("verify", f"disk:{bench.store}/{name}")
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stdout + checked.stderr


def test_test_connection_to_nothing_says_so(tmp_path: Path) -> None:
    services = Services([], machine_disks=False, image_dir=str(tmp_path))
    app = ClonebayApp(services, watch_disks=False)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        await pilot.press("r")
        screen = await screen_of(pilot, StoresScreen)
        await move_to(pilot, screen, NETWORK_ROW)
        await pilot.press("enter")
        form = await screen_of(pilot, NetworkStoreScreen)
        form.query_one("#net-kind", RadioSet).focus()
        await pilot.press("right", "right", "enter")  # SSH server (SFTP)
        await pilot.pause()
        for name, value in (("host", "127.0.0.1"), ("port", "1"), ("user", "nobody"),
                            ("folder", "x")):  # fmt: skip
            form.query_one(f"#net-{name}", Input).value = value
        seen["password_masked"] = form.query_one("#net-password", Input).password
        start = time.monotonic()
        form.query_one("#test", Button).focus()
        await pilot.press("enter")
        await until(pilot, "the test's verdict", lambda: bool(form.tested))
        seen["seconds"] = time.monotonic() - start
        seen["status"] = str(form.query_one("#net-status").render())
        seen["button"] = form.query_one("#test", Button).disabled

    run(app, script)
    assert seen["password_masked"]
    assert "127.0.0.1" in seen["status"] and "no SSH server" in seen["status"], seen["status"]
    assert not seen["button"]
    assert seen["seconds"] < 60


def test_sftp_store_asks_for_the_host_key_and_stays_mounted(
    ssh_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real OpenSSH server (tests/stores/conftest.py) seen for the first time: its key is
    shown in the modal; refused, the test says so; accepted, it is OK with the free space; the
    store opened from the form is mounted, the image picker starts in it, and it is unmounted
    when the app exits. The store is remembered at the top of the list for the next job."""
    monkeypatch.setattr(sftp, "KNOWN_HOSTS", tmp_path / "known_hosts")
    services = Services([], machine_disks=False, image_dir=str(tmp_path))
    app = ClonebayApp(services, watch_disks=False)
    seen: dict[str, Any] = {}

    async def test_once(pilot: Pilot[Any], form: NetworkStoreScreen, button: str) -> str:
        form.tested = ""
        form.query_one("#test", Button).focus()
        await pilot.press("enter")
        modal = await screen_of(pilot, HostKeyModal)
        seen.setdefault("fingerprints", modal.fingerprints)
        seen.setdefault("focused", modal.focused.id if modal.focused else None)
        modal.query_one(f"#{button}", Button).press()
        await until(pilot, "the test's verdict", lambda: bool(form.tested))
        return str(form.query_one("#net-status").render())

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        await pilot.press("r")
        screen = await screen_of(pilot, StoresScreen)
        await move_to(pilot, screen, NETWORK_ROW)
        await pilot.press("enter")
        form = await screen_of(pilot, NetworkStoreScreen)
        form.query_one("#kind-sftp", RadioButton).value = True
        await pilot.pause()
        for name, value in (("host", ssh_server.address), ("user", USER),
                            ("password", PASSWORD), ("folder", "~")):  # fmt: skip
            form.query_one(f"#net-{name}", Input).value = value
        seen["refused"] = await test_once(pilot, form, "refuse")
        seen["accepted"] = await test_once(pilot, form, "accept")
        form.query_one("#use", Button).press()
        picker = await screen_of(pilot, ImagePickerScreen)
        seen["folder"] = picker.folder
        seen["mounted"] = our_store_mounts()
        await pilot.press("escape")
        again = await screen_of(pilot, StoresScreen)
        seen["top"] = next(iter(again.rows))

    run(app, script)
    assert ssh_server.fingerprint() in seen["fingerprints"]
    assert seen["focused"] == "refuse"
    assert "was not accepted" in seen["refused"], seen["refused"]
    assert seen["accepted"].startswith("OK, ") and "free" in seen["accepted"], seen["accepted"]
    assert seen["mounted"] == [seen["folder"]] and seen["folder"].startswith(STORES_DIR)
    assert seen["top"].startswith("remembered:sftp://")
    assert our_store_mounts() == [], "the SFTP store stayed mounted after the app exited"


def our_store_mounts() -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return [ln.split()[4] for ln in f if " fuse.sshfs " in ln and STORES_DIR in ln]


def test_the_live_sticks_images_partition_is_offered_first(
    bench: Bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition labelled as make-stick labels it comes first, under the cursor."""
    backing = sparse_file(tmp_path / "stickimages.img", 128 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-L", IMAGES_LABEL, str(backing)], check=True)
    stick = loopdev.attach(str(backing))
    try:
        ours = (bench.store, bench.source, stick)
        monkeypatch.setattr(
            listing, "list_disks", lambda: [d for d in list_disks() if d.path in ours]
        )
        app = store_app(bench, tmp_path)
        seen: dict[str, Any] = {}

        async def script(pilot: Pilot[Any]) -> None:
            await screen_of(pilot, HomeScreen)
            await pilot.press("r")  # restore: store -> image picker
            screen = await listed(pilot)
            seen["first"] = next(iter(screen.rows))
            seen["cursor"] = screen.query_one("#stores", DataTable).cursor_row

        run(app, script)
        assert seen["first"] == f"disk:{stick}" and seen["cursor"] == 0, seen
    finally:
        loopdev.detach(stick)
