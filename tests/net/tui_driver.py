"""Runs one multicast TUI screen headless (Textual's ``run_test``) and prints, as one JSON line,
what the screen showed when its session ended. The multicast TUI tests start it inside a test
LAN's namespace (``ip netns exec``), next to real ``clonebay send`` / ``receive`` processes:

    python -m tests.net.tui_driver send IMAGE KEY MIN_RECEIVERS
    python -m tests.net.tui_driver receive TARGET KEY
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from textual.app import App
from textual.widgets import DataTable, Static

from clonebay.tui.screens.multicast_receive import MulticastReceiveScreen
from clonebay.tui.screens.multicast_send import MulticastSendScreen

WAIT = 2400  # x 0.1 s: the session's time limit here


class Host(App[None]):
    """An app that shows one screen."""

    def __init__(self, screen: MulticastSendScreen | MulticastReceiveScreen) -> None:
        super().__init__()
        self.shown = screen
        self.errors: list[str] = []

    def on_mount(self) -> None:
        self.push_screen(self.shown)

    def on_worker_error(self, message: Any) -> None:  # the app's one error handler, in short
        self.errors.append(str(message.error))


async def run(argv: list[str]) -> dict[str, Any]:
    screen: MulticastSendScreen | MulticastReceiveScreen
    if argv[0] == "send":
        screen = MulticastSendScreen(argv[1], argv[2], min_receivers=int(argv[3]), rate=30e6)
    else:
        screen = MulticastReceiveScreen(argv[1], argv[2])
    app = Host(screen)
    async with app.run_test(size=(140, 40)) as pilot:
        for _ in range(WAIT):
            await pilot.pause(0.1)
            if screen.final is not None or getattr(screen, "failed", False) or app.errors:
                break
        await pilot.pause(0.2)
        out: dict[str, Any] = {"errors": app.errors}
        if isinstance(screen, MulticastSendScreen):
            table: DataTable[str] = screen.query_one("#mc-receivers", DataTable)
            out["rows"] = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
            out["status"] = str(screen.query_one("#mc-status", Static).content)
        else:
            out["state"] = str(screen.query_one("#mc-state", Static).content)
            out["counters"] = str(screen.query_one("#mc-counters", Static).content)
        if shot := os.environ.get("CLONEBAY_TUI_SCREENSHOT"):  # to look at it by hand
            app.save_screenshot(shot)
        await pilot.press("escape")  # Continue: the screen dismisses itself
        await pilot.pause(0.2)
        out["dismissed"] = app.screen is not screen
    return out


if __name__ == "__main__":
    print(json.dumps({"event": "result", **asyncio.run(run(sys.argv[1:]))}), flush=True)
