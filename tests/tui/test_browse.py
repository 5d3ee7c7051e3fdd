"""The Browse flow driven through the TUI with Pilot on a real saved image of the demo disk
(root: FUSE, loop devices, mounts): Home → Browse → the image → the ext4 partition → into
usr/lib (and up and back, with Backspace) → two files and one folder marked → extracted into a
fresh folder. Every file that arrives must hash as the demo disk's record says, exactly the
expected files must arrive, and nothing of the image may be left mounted or attached. On a copy
of the image with one frame damaged, the Extract screen names the one file that could not be
read (an I/O error, as the engine reports it) and copies the others."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input

from clonebay.testdisks import disks, ext
from clonebay.tui.app import ClonebayApp
from clonebay.tui.screens.browse_extract import ExtractScreen
from clonebay.tui.screens.browse_parts import BrowsePartsScreen
from clonebay.tui.screens.browse_tree import BrowseTreeScreen
from clonebay.tui.screens.home import HomeScreen
from clonebay.tui.screens.image_picker import ImagePickerScreen
from clonebay.tui.services import ExtractSummary, ImageEntry, Services
from tests.browse.test_damage import damage_frame_under
from tests.browse.truth import sha256, walk
from tests.diskcheck import extract as cut_out
from tests.tui.helpers import pick_folder_store, run, screen_of, type_into, until
from tests.tui.test_browse_snapshots import cursor_to, open_folder

FOLDER = "usr/lib"  # holds hard links (files) and pkgN folders: usr_tree in testdisks/tree.py


def our_mounts() -> list[str]:
    """Lines of this process's mount table and loop devices that belong to a browse of ours:
    the temporary folders are named view-PID-... (browse/mounts.py temporary_mount)."""
    tag = f"/view-{os.getpid()}-"
    found = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if tag in line]
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            text = backing.read_text()
        except OSError:
            continue  # detached meanwhile
        if tag in text:
            found.append(f"{backing}: {text.strip()}")
    return found


async def browse_image(pilot: Pilot[Any], image: Path) -> BrowsePartsScreen:
    """Home → Browse → the store (the app's image folder) → ``image``: its partitions, read."""
    await screen_of(pilot, HomeScreen)
    await pilot.press("b")
    await pick_folder_store(pilot)
    picker = await screen_of(pilot, ImagePickerScreen)
    await until(pilot, "the image list", lambda: str(image) in picker.entries)
    await pilot.press("enter")
    parts = await screen_of(pilot, BrowsePartsScreen)
    await until(pilot, "the partitions", lambda: bool(parts.parts))
    return parts


def test_browse_extract_marked(
    demo_disk: disks.BuiltDisk, demo_image: Path, tmp_path: Path
) -> None:
    ext4 = next(p for p in demo_disk.partitions if p.fstype == "ext4")
    assert ext4.tree is not None
    record = ext4.tree.files
    names = sorted(p for p in record if p.rpartition("/")[0] == FOLDER)
    files = names[:2]
    inside = [p[len(FOLDER) + 1 :] for p in record if p.startswith(f"{FOLDER}/pkg")]
    folder = f"{FOLDER}/{min(rel.split('/')[0] for rel in inside)}"
    dest = tmp_path / "recovered"
    services = Services([], machine_disks=False, image_dir=str(demo_image.parent))
    app = ClonebayApp(services, watch_disks=False)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        parts = await browse_image(pilot, demo_image)
        seen["greyed"] = {p.fstype for p in parts.parts.values() if not p.mountable}
        region = next(p.region for p in parts.parts.values() if p.fstype == "ext4")
        for _ in range(len(parts.parts)):
            if parts.highlighted() == region:
                break
            await pilot.press("down")
        await pilot.press("enter")

        tree = await screen_of(pilot, BrowseTreeScreen)
        await until(pilot, "the root folder", lambda: tree.reading is None and bool(tree.entries))
        await open_folder(pilot, tree, "usr")
        await open_folder(pilot, tree, FOLDER)
        await pilot.press("backspace")  # up to usr, the cursor on lib; Enter goes back in
        await until(pilot, "usr", lambda: tree.cwd == "usr" and tree.reading is None)
        assert tree.highlighted() == FOLDER
        await pilot.press("enter")
        await until(pilot, FOLDER, lambda: tree.cwd == FOLDER and tree.reading is None)
        for path in [*files, folder]:
            await cursor_to(pilot, tree, path)
            await pilot.press("space")
        seen["marked"] = set(tree.marked)
        await pilot.press("x")

        extract = await screen_of(pilot, ExtractScreen)
        seen["default_dest"] = extract.query_one("#extract-dest", Input).value
        extract.query_one("#extract-dest", Input).value = ""
        await type_into(pilot, "#extract-dest", str(dest))
        await pilot.press("enter")
        await until(pilot, "the summary", lambda: extract.summary is not None)
        seen["summary"] = extract.summary
        seen["mounted_after"] = our_mounts()
        await pilot.press("escape")  # back to the tree, marks kept
        await screen_of(pilot, BrowseTreeScreen)
        seen["marks_kept"] = len(tree.marked)
        await pilot.press("escape", "escape", "escape", "escape")  # parts, images, store, Home
        await screen_of(pilot, HomeScreen)

    run(app, script)

    assert seen["greyed"] >= {"swap", "unknown"}
    assert seen["marked"] == {*files, folder}
    assert seen["marks_kept"] == 3
    assert seen["default_dest"] == str(demo_image.parent)
    summary: ExtractSummary = seen["summary"]
    assert summary.failed == () and summary.image_errors == ()
    base = folder.rpartition("/")[0]
    expected = {p[len(base) + 1 :]: record[p] for p in record if p.startswith(f"{folder}/")}
    expected |= {p.rpartition("/")[2]: record[p] for p in files}
    pulled = {rel: m.content for rel, m in walk(dest).items() if m.kind == "file"}
    assert pulled == expected
    assert summary.files == len(expected)
    assert summary.bytes == sum((dest / rel).stat().st_size for rel in pulled)
    assert seen["mounted_after"] == []
    assert our_mounts() == []


def test_extract_names_the_unreadable_file(
    demo_disk: disks.BuiltDisk, demo_image: Path, tmp_path: Path
) -> None:
    ext4 = next(p for p in demo_disk.partitions if p.fstype == "ext4")
    assert ext4.tree is not None
    big = next(p for p in ext4.tree.files if p.startswith("var/big/"))
    partition = cut_out(demo_disk.path, ext4.start, ext4.size, tmp_path / "p.img")
    blocks = ext.debugfs(partition, [f"blocks /{big}"]).split()
    image = tmp_path / "damaged.image"
    shutil.copytree(demo_image, image)
    services = Services([], machine_disks=False, image_dir=str(tmp_path))
    part = next(p for p in services.partitions(str(image)) if p.fstype == "ext4")
    damage_frame_under(image, part.region, int(blocks[len(blocks) // 2]) * 4096)
    dest = tmp_path / "out"
    entry = ImageEntry(str(image), image.name)
    screen = ExtractScreen(services, entry, part, [big, "etc/hostname"], str(dest))
    app = ClonebayApp(services, watch_disks=False)
    seen: dict[str, Any] = {}

    async def script(pilot: Pilot[Any]) -> None:
        await screen_of(pilot, HomeScreen)
        await pilot.app.push_screen(screen)
        await screen_of(pilot, ExtractScreen)
        await pilot.press("enter")
        await until(pilot, "the summary", lambda: screen.summary is not None)
        seen["text"] = str(screen.query_one("#extract-summary").render())

    run(app, script)

    summary = screen.summary
    assert summary is not None
    assert summary.failed == ((big, "Input/output error"),)
    assert summary.files == 1
    assert any(f"region {part.region}" in line for line in summary.image_errors)
    assert f"{big}: Input/output error" in seen["text"] and "Done with errors" in seen["text"]
    assert sha256(dest / "hostname") == ext4.tree.files["etc/hostname"]
    assert not (dest / Path(big).name).exists()
    assert our_mounts() == []
