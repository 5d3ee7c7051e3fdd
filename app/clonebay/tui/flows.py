"""The order of screens for each job, as plain steps (DESIGN §4):

    clone:   source disk → target disk(s) (→ resume?) → plan (→ confirm, over the plan) → progress
             → result
    save:    source disk → store → where to save (→ resume?) → plan → progress → result
    restore: store → image → target disk(s) → plan (→ confirm, over the plan) → progress → result
    disks:   disk list → details of one disk
    browse:  store → image → partition → folder tree (→ extract the marked files, over the tree)

The store ("Where are the images?", screens/stores.py) is a partition, a folder or a network
share; it stays mounted after the step (Services keeps it) and its folder is what the image
picker and the save screen start from. A save into an image that a save left incomplete asks
first (screens/resume_ask.py): Resume goes straight to progress, Start again to the plan. So
does a clone onto one target when a clone of the same source onto it stopped after a
checkpoint (its journal is there; screens/clone_resume_ask.py), Resume after the Confirm modal.

Each flow runs as an async worker of the app and awaits each screen's answer; Escape (None or
False) goes one step back, and back from the first step returns to Home. Nothing here touches
a disk: the screens do their reading in thread workers through Services (and the flow looks
for a clone's journal through it, in a thread).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from textual.app import App

from clonebay.model import Disk
from clonebay.tui.clone_job import resume_request
from clonebay.tui.jobs import VERBS, JobKind, JobRequest
from clonebay.tui.multicast_flow import multicast_flow
from clonebay.tui.screens.ask import AskModal
from clonebay.tui.screens.browse_parts import BrowsePartsScreen
from clonebay.tui.screens.browse_tree import BrowseTreeScreen
from clonebay.tui.screens.clone_resume_ask import CloneResumeModal
from clonebay.tui.screens.confirm import ConfirmModal
from clonebay.tui.screens.disk_details import DiskDetailsScreen
from clonebay.tui.screens.disk_picker import DiskPickerScreen
from clonebay.tui.screens.image_picker import ImagePickerScreen
from clonebay.tui.screens.plan import PlanScreen
from clonebay.tui.screens.progress import ProgressScreen
from clonebay.tui.screens.result import ResultScreen
from clonebay.tui.screens.resume_ask import ResumeChoice, ResumeModal
from clonebay.tui.screens.save_target import SaveTarget, SaveTargetScreen
from clonebay.tui.screens.stores import StoresScreen
from clonebay.tui.screens.targets_picker import TargetsPickerScreen, pick_targets
from clonebay.tui.services import ImageEntry, ImagePartition, Role, Services

MAX_STEPS = 1000  # a flow is a handful of screens; this only bounds the loop


async def run_job(app: App[Any], services: Services, request: JobRequest) -> None:
    """Progress, then Result (which powers the machine off when asked and all went well).
    A clone or save that stopped on a read error of its source is offered again in rescue
    mode (docs/cli.md, Failing disks); a save or a clone that stopped after a checkpoint offers
    Resume on its Result (with the same choices: rescue, grow mode, verify)."""
    outcome = await app.push_screen_wait(ProgressScreen(services, request))
    if getattr(app, "leaving", False):
        return  # the terminal is gone and the app is on its way out: no screen to show
    power_off = request.power_off and outcome.ok
    resume = await app.push_screen_wait(ResultScreen(outcome, services if power_off else None))
    if resume and outcome.resume_offer:
        # the plan's totals counted the whole save: the resumed one reports what follows
        again = dataclasses.replace(request, resume=True, overwrite=False, totals=())
        await run_job(app, services, again)
        return
    if outcome.rescue_offer and await app.push_screen_wait(
        AskModal(
            "Rescue the failing disk?",
            f"{request.source} could not be read. In rescue mode clonebay reads every sector"
            " that still answers, the easy data first, skips and maps the bad ones (zeros in"
            f" the copy) and lists them.\n\n{VERBS[request.kind]} {request.source} again in"
            " rescue mode?",
            yes="Rescue",
            no="Not now",
        )
    ):
        await run_job(app, services, dataclasses.replace(request, rescue=True, resume=False))


async def clone_flow(app: App[Any], services: Services) -> None:
    source: Disk | None = None
    targets: list[Disk] | None = None
    step = 0
    for _ in range(MAX_STEPS):
        if step == 0:
            source = await app.push_screen_wait(DiskPickerScreen(services, Role.SOURCE))
            if source is None:
                return
            step = 1
        elif step == 1 and source is not None:
            targets = await pick_targets(app, TargetsPickerScreen(services, source=source))
            step = 0 if not targets else 2
        elif step == 2 and source is not None and targets:
            journal = None  # one target that a clone of this source left incomplete: ask first
            if len(targets) == 1:
                journal = await asyncio.to_thread(
                    services.clone_journal, source.path, targets[0].path
                )
            step = 4 if journal is None else 3
        elif step == 3 and source is not None and targets:
            choice = await resume_clone(app, services, source, targets[0])
            if choice is ResumeChoice.RESUME:
                return
            step = 1 if choice is None else 4
        elif step == 4 and source is not None and targets:
            target, *also = targets
            request = await app.push_screen_wait(
                PlanScreen(
                    services,
                    JobKind.CLONE,
                    source.path,
                    target.path,
                    target_size=target.size,
                    confirm=target,
                    also=also,
                )
            )
            if request is None:
                step = 1
                continue
            await run_job(app, services, request)
            return


async def resume_clone(
    app: App[Any], services: Services, source: Disk, target: Disk
) -> ResumeChoice | None:
    """The question about the interrupted clone of ``source`` onto ``target``: RESUME once the
    resumed clone has run (after the Confirm modal: No asks again), AGAIN for the plan, None
    for Back."""
    for _ in range(MAX_STEPS):
        modal = CloneResumeModal(services, source, target)
        choice = await app.push_screen_wait(modal)
        if choice is not ResumeChoice.RESUME or modal.state is None:
            return choice
        confirm = ConfirmModal(services, target, f"{VERBS[JobKind.CLONE]} (resumed)")
        if await app.push_screen_wait(confirm):
            await run_job(app, services, resume_request(source.path, target.path, modal.state))
            return choice
    return None


async def pick_store(
    app: App[Any], services: Services, heading: str, job_devices: tuple[str, ...] = ()
) -> str | None:
    """The store's folder (mounted, kept so), or None on Escape. With ``job_devices`` (the
    save's source) the store gets a new image: mounted read-write, never on those disks."""
    screen = StoresScreen(
        services, heading=heading, job_devices=job_devices, write=bool(job_devices)
    )
    folder: str | None = await app.push_screen_wait(screen)
    return folder


async def save_flow(app: App[Any], services: Services) -> None:
    source: Disk | None = None
    folder: str | None = None
    image: SaveTarget | None = None
    overwrite = False
    step = 0
    for _ in range(MAX_STEPS):
        if step == 0:
            source = await app.push_screen_wait(DiskPickerScreen(services, Role.SOURCE))
            if source is None:
                return
            step = 1
        elif step == 1 and source is not None:
            heading = "Where are the images? Pick the store for the new image."
            folder = await pick_store(app, services, heading, (source.path,))
            step = 0 if folder is None else 2
        elif step == 2 and source is not None and folder is not None:
            image = await app.push_screen_wait(SaveTargetScreen(services, source, folder))
            overwrite = False  # until the technician chooses to start an interrupted save again
            step = 1 if image is None else 3 if image.interrupted else 4
        elif step == 3 and source is not None and image is not None:
            modal = ResumeModal(services, source, image.path)
            choice = await app.push_screen_wait(modal)
            if choice is ResumeChoice.RESUME:
                rescue = modal.state is not None and modal.state.rescue
                resumed = JobRequest(
                    JobKind.SAVE, source.path, image.path, rescue=rescue, resume=True
                )
                await run_job(app, services, resumed)
                return
            overwrite = choice is ResumeChoice.AGAIN
            step = 4 if overwrite else 2
        elif step == 4 and source is not None and image is not None:
            request = await app.push_screen_wait(
                PlanScreen(services, JobKind.SAVE, source.path, image.path)
            )
            if request is None:
                step = 2
                continue
            await run_job(app, services, dataclasses.replace(request, overwrite=overwrite))
            return


async def restore_flow(app: App[Any], services: Services) -> None:
    folder: str | None = None
    image: ImageEntry | None = None
    targets: list[Disk] | None = None
    step = -1
    for _ in range(MAX_STEPS):
        if step == -1:
            folder = await pick_store(app, services, "Where is the image to restore?")
            if folder is None:
                return
            step = 0
        elif step == 0 and folder is not None:
            image = await app.push_screen_wait(ImagePickerScreen(services, folder))
            step = -1 if image is None else 1
        elif step == 1 and image is not None:
            targets = await pick_targets(
                app, TargetsPickerScreen(services, title=_restore_prompt(image))
            )
            step = 0 if not targets else 2
        elif step == 2 and image is not None and targets:
            target, *also = targets
            request = await app.push_screen_wait(
                PlanScreen(
                    services,
                    JobKind.RESTORE,
                    image.path,
                    target.path,
                    target_size=target.size,
                    confirm=target,
                    also=also,
                )
            )
            if request is None:
                step = 1
                continue
            await run_job(app, services, request)
            return


def _restore_prompt(image: ImageEntry) -> str:
    return f"Pick the disk to restore {image.name} onto. Everything on it will be overwritten."


async def disks_flow(app: App[Any], services: Services) -> None:
    for _ in range(MAX_STEPS):
        disk = await app.push_screen_wait(DiskPickerScreen(services, Role.BROWSE))
        if disk is None:
            return
        await app.push_screen_wait(DiskDetailsScreen(services, disk))


async def browse_flow(app: App[Any], services: Services) -> None:
    folder: str | None = None
    image: ImageEntry | None = None
    part: ImagePartition | None = None
    step = -1
    for _ in range(MAX_STEPS):
        if step == -1:
            folder = await pick_store(app, services, "Where is the image to look into?")
            if folder is None:
                return
            step = 0
        elif step == 0 and folder is not None:
            image = await app.push_screen_wait(
                ImagePickerScreen(
                    services, folder, heading="Pick the image to look into.", use="opened"
                )
            )
            step = -1 if image is None else 1
        elif step == 1 and image is not None:
            part = await app.push_screen_wait(BrowsePartsScreen(services, image))
            step = 0 if part is None else 2
        elif step == 2 and image is not None and part is not None:
            await app.push_screen_wait(BrowseTreeScreen(services, image, part))
            step = 1


FLOWS = {
    "clone": clone_flow,
    "save": save_flow,
    "restore": restore_flow,
    "disks": disks_flow,
    "browse": browse_flow,
    "multicast": multicast_flow,
}
