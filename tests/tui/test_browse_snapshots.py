"""Snapshots of the Browse screens on recorded data (tests/tui/recorded.py): the image's
partitions with the ones without files greyed, a folder of the Windows partition with two files
and a folder marked, and the summary of an extraction that met one damaged frame. Accept a
change with ``pytest tests/tui/test_browse_snapshots.py --snapshot-update`` after looking."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from clonebay.tui.screens.browse_extract import ExtractScreen
from clonebay.tui.screens.browse_parts import BrowsePartsScreen
from clonebay.tui.screens.browse_tree import BrowseTreeScreen
from tests.tui.helpers import SIZE, until
from tests.tui.recorded import HOME, IMAGES, WINDOWS
from tests.tui.test_snapshots import SnapCompare, settle, showing, snap


def test_browse_partitions(snap_compare: SnapCompare) -> None:
    snap(snap_compare, lambda s: BrowsePartsScreen(s, IMAGES[0]))


async def open_folder(pilot: Pilot[Any], tree: BrowseTreeScreen, key: str) -> None:
    """Move the cursor to the row ``key`` and press Enter; wait for the folder."""
    await cursor_to(pilot, tree, key)
    await pilot.press("enter")
    await until(pilot, key, lambda: tree.cwd == key and tree.reading is None)


async def cursor_to(pilot: Pilot[Any], tree: BrowseTreeScreen, key: str) -> None:
    """Move the cursor to the row ``key`` with the arrow keys."""
    table: DataTable[Any] = tree.query_one(DataTable)
    steps = table.get_row_index(key) - table.cursor_row
    await pilot.press(*["down" if steps > 0 else "up"] * abs(steps))
    assert tree.highlighted() == key


def test_browse_tree_marked(snap_compare: SnapCompare) -> None:
    app, before = showing(lambda s: BrowseTreeScreen(s, IMAGES[0], WINDOWS))

    async def mark(pilot: Pilot[Any]) -> None:
        await before(pilot)
        tree = pilot.app.screen
        assert isinstance(tree, BrowseTreeScreen)
        await open_folder(pilot, tree, "Users")
        await open_folder(pilot, tree, HOME)
        for name in ("Documents", "Angebot Müller GmbH.docx", "Steuererklärung 2024.pdf"):
            await cursor_to(pilot, tree, f"{HOME}/{name}")
            await pilot.press("space")
        assert len(tree.marked) == 3
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=mark)


def test_browse_extract_summary(snap_compare: SnapCompare) -> None:
    paths = [f"{HOME}/Documents", f"{HOME}/notes.txt"]
    app, before = showing(lambda s: ExtractScreen(s, IMAGES[0], WINDOWS, paths, "/srv/images"))

    async def extract(pilot: Pilot[Any]) -> None:
        await before(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, ExtractScreen)
        screen.query_one("#extract-dest", Input).value = "/mnt/usb/recovered"
        await pilot.press("enter")
        await until(pilot, "the summary", lambda: screen.summary is not None)
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=extract)
