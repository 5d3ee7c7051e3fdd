"""The Multicast flow (flows.py lists it):

    send:    store → image → session (key shown, receivers joined, per-receiver progress and
             outcome)
    receive: target disk → "overwrite it?" (No focused) → session key → progress → outcome

Escape goes one step back, as in every flow.
"""

from __future__ import annotations

from typing import Any

from textual.app import App

from clonebay.model import Disk
from clonebay.net.protocol import new_passphrase
from clonebay.tui.screens.ask import AskModal
from clonebay.tui.screens.disk_picker import DiskPickerScreen
from clonebay.tui.screens.image_picker import ImagePickerScreen
from clonebay.tui.screens.multicast_ask import MulticastModeModal, SessionKeyModal
from clonebay.tui.screens.multicast_receive import MulticastReceiveScreen
from clonebay.tui.screens.multicast_send import MulticastSendScreen
from clonebay.tui.screens.stores import StoresScreen
from clonebay.tui.services import Role, Services
from clonebay.units import human_size

MAX_STEPS = 1000


async def multicast_flow(app: App[Any], services: Services) -> None:
    for _ in range(MAX_STEPS):
        mode = await app.push_screen_wait(MulticastModeModal())
        if mode is None:
            return
        if mode == "send":
            await _send(app, services)
        else:
            await _receive(app, services)


async def _send(app: App[Any], services: Services) -> None:
    for _ in range(MAX_STEPS):
        folder = await app.push_screen_wait(
            StoresScreen(services, heading="Where is the image to multicast?")
        )
        if folder is None:
            return
        image = await app.push_screen_wait(
            ImagePickerScreen(services, folder, heading="Pick the image to multicast.", use="sent")
        )
        if image is not None:
            await app.push_screen_wait(MulticastSendScreen(image.path, new_passphrase()))
            return


async def _receive(app: App[Any], services: Services) -> None:
    for _ in range(MAX_STEPS):
        target: Disk | None = await app.push_screen_wait(
            DiskPickerScreen(services, Role.TARGET, title="Pick the disk to receive onto.")
        )
        if target is None:
            return
        what = " ".join(x for x in (target.model, target.serial) if x)
        sure = await app.push_screen_wait(
            AskModal(
                "Overwrite this disk?",
                f"Everything on {target.path} ({what}, {human_size(target.size)}) will be"
                " replaced by the image the sender sends; on a disk larger than the image's"
                " the partitions grow to fill it.",
                yes="Yes, overwrite",
                no="No",
            )
        )
        if not sure:
            continue
        key = await app.push_screen_wait(SessionKeyModal())
        if key is None:
            continue
        await app.push_screen_wait(MulticastReceiveScreen(target.path, key))
        return
