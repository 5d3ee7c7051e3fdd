"""Helpers that drive an app with Pilot at a frozen terminal size and wait for what the screen
shows. Waiting is by condition with a deadline (the app's workers run real jobs in threads),
never by a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from textual.app import App
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Input

from clonebay.tui.jobs import Outcome
from clonebay.tui.screens.ask import AskModal
from clonebay.tui.screens.progress import ProgressScreen
from clonebay.tui.screens.result import ResultScreen
from clonebay.tui.screens.stores import StoresScreen

SIZE = (120, 40)
DEADLINE = 60.0  # seconds: a hung job fails the test instead of hanging the run

S = TypeVar("S", bound=Screen[Any])


def run(app: App[Any], script: Callable[[Pilot[Any]], Awaitable[None]]) -> None:
    """Run ``script`` against ``app`` headless at the frozen size."""

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await script(pilot)

    asyncio.run(main())


async def until(pilot: Pilot[Any], what: str, check: Callable[[], object]) -> None:
    """Let the app run until ``check()`` is true; fail after DEADLINE seconds."""
    end = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > end:
            screen = pilot.app.screen
            said = f": {getattr(screen, 'text', '')}" if hasattr(screen, "text") else ""
            raise AssertionError(f"timed out waiting for {what} (the screen: {screen!r}{said})")
        await pilot.pause(0.05)


async def screen_of(pilot: Pilot[Any], kind: type[S]) -> S:
    """Wait until the active screen is a ``kind`` and return it."""
    await until(pilot, kind.__name__, lambda: isinstance(pilot.app.screen, kind))
    screen = pilot.app.screen
    assert isinstance(screen, kind)
    await pilot.pause()
    return screen


async def type_into(pilot: Pilot[Any], selector: str, text: str) -> None:
    """Focus the Input ``selector`` of the active screen and type ``text`` into it."""
    field = pilot.app.screen.query_one(selector, Input)
    field.focus()
    await pilot.pause()
    await pilot.press(*text)


async def pick_folder_store(pilot: Pilot[Any]) -> StoresScreen:
    """On "Where are the images?", pick the first row (in a fresh session: the folder the app
    was given) and wait for the screen that follows."""
    screen = await screen_of(pilot, StoresScreen)
    assert next(iter(screen.rows)) == "folder", list(screen.rows)
    await pilot.press("enter")
    await until(pilot, "the screen after the store", lambda: pilot.app.screen is not screen)
    return screen


def cell_text(row: list[Any]) -> list[str]:
    return [str(getattr(cell, "plain", cell)) for cell in row]


async def cancel_at_once(pilot: Pilot[Any]) -> ResultScreen:
    """On the Progress screen: cancel (yes at the question) before the job can end; the
    Result that follows."""
    await screen_of(pilot, ProgressScreen)
    await pilot.press("escape")  # the reading stops within a chunk
    await screen_of(pilot, AskModal)
    await pilot.click("#yes")
    return await screen_of(pilot, ResultScreen)


async def resume_on(pilot: Pilot[Any], first: ResultScreen) -> Outcome:
    """Resume on the Result ``first``: the Outcome of the job resumed."""
    await pilot.click("#resume")

    def another() -> bool:
        return isinstance(pilot.app.screen, ResultScreen) and pilot.app.screen is not first

    await until(pilot, "the second result", another)
    screen = pilot.app.screen
    assert isinstance(screen, ResultScreen)
    return screen.outcome
