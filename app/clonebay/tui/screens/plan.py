"""Plan: what the job will do, before anything is written.

Source and target side by side, each as a bar and a table: for a clone, where every partition
goes, what grows and what moves, what is copied raw and why, and the fixups that follow; for a
save, what of each region is read into the image; for a restore, where each region of the image
lands on the target. The options are here: grow mode (clone and restore, for a larger target),
verify, and power off when done; a new grow mode makes a new plan. A plan the engine refuses
(target too small, a guard) shows the refusal in the error modal and cannot be started. A
source disk whose SMART says it is worn or failing gets its warning above the buttons: it can
still be copied (it should be, at once), but the technician knows why reads may fail.

A locked BitLocker or LUKS volume of the source is named below the layouts with what would open
it (its protectors, the recovery key ID): it is copied whole. Unlock (key u) asks for its key
(screens/unlock.py); once a key opens it the plan is made again, and the volume is copied by the
used blocks of the filesystem inside, still encrypted. A hibernated Windows' note is there too,
in full.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import (
    Button,
    Checkbox,
    Footer,
    Header,
    Input,
    Label,
    RadioButton,
    RadioSet,
    Static,
)

from clonebay.engine import Grow
from clonebay.engine.postcopy.options import PostcopyOptions
from clonebay.errors import UsageError
from clonebay.model import Disk
from clonebay.system.udev import LIVE_MEDIUM_MOUNTS
from clonebay.tui.jobs import VERBS, JobKind, JobRequest
from clonebay.tui.layouts import Layout, clone_layouts, restore_layouts, save_layouts
from clonebay.tui.screens.confirm import ConfirmModal
from clonebay.tui.screens.unlock import UnlockingScreen
from clonebay.tui.services import Services
from clonebay.tui.unlocking import LockedVolume, hibernated_notes, locked_volumes
from clonebay.tui.widgets.layout_view import SOURCE, TARGET, LayoutView
from clonebay.tui.widgets.locked_panel import LockedPanel

GROW_LABELS = (
    (Grow.PROPORTIONAL, "Share the extra space among the partitions"),
    (Grow.LAST, "Give the extra space to the last partition"),
    (Grow.NONE, "Keep the sizes (extra space stays free)"),
)


@dataclass(frozen=True)
class PlanView:
    left: Layout
    right: Layout
    totals: tuple[tuple[str, int], ...]
    volumes: tuple[Any, ...] = ()  # the source's SourceVolumes, for what the post-copy pass does
    facts: tuple[str, ...] = ()  # the source's Windows: name, sysprep state, machine SID
    health: tuple[str, ...] = ()  # the source disk's SMART warning (system/smart.job_warning)
    locked: tuple[LockedVolume, ...] = ()  # the source's BitLocker and LUKS volumes
    hibernated: tuple[str, ...] = ()  # what each hibernated Windows of the source means


def make_view(
    services: Services,
    kind: JobKind,
    source: str,
    target: str,
    *,
    target_size: int,
    grow: Grow,
    also: Sequence[str] = (),
) -> PlanView:
    """Ask the engine for the plan and turn it into two layouts (runs in a worker). ``also``:
    more targets of the job, planned too (each has its own plan; a refusal of any shows here)
    but not drawn."""
    if also:
        services.check_targets([target, *also])
        for other in also:
            if kind is JobKind.CLONE:
                services.clone_plan(source, other, grow)
            else:
                services.restore_plan(source, other, grow)
    from clonebay.engine.postcopy.preview import from_info, from_volumes

    if kind is JobKind.CLONE:
        plan = services.clone_plan(source, target, grow)
        left, right = clone_layouts(plan, source, target)
        totals = tuple((str(m.number), m.volume.used_bytes) for m in plan.moves if m.volume)
        parts = [(f"p{m.number}", m.source.type_id, m.volume) for m in plan.moves]
        facts = tuple(services.windows_facts(source))
        health = tuple(services.health_warning(source))
        view = PlanView(left, right, totals, tuple(from_volumes(parts)), facts, health)
        return with_volumes(services, source, view)
    if kind is JobKind.SAVE:
        job = services.save_plan(source)
        left, right = save_layouts(source, job, target)
        totals = tuple((ln.name, ln.bytes_to_copy) for ln in job.lines)
        view = PlanView(left, right, totals, health=tuple(services.health_warning(source)))
        return with_volumes(services, source, view)
    info = services.image_info(source)
    job = services.restore_plan(source, target, grow)
    left, right = restore_layouts(info, job, target, target_size)
    return PlanView(left, right, (), tuple(from_info(info)))


def with_volumes(services: Services, source: str, view: PlanView) -> PlanView:
    """``view`` with the source's encrypted volumes and hibernated Windows (the report the plan
    was made from: Services caches it, read with the session's keys)."""
    report = services.inspect(source)
    return dataclasses.replace(
        view, locked=locked_volumes(report), hibernated=tuple(hibernated_notes(report))
    )


class PlanScreen(UnlockingScreen[JobRequest | None]):
    """Dismisses with the JobRequest to run, or None (Back). With ``confirm`` (the target disk
    of a clone or restore), Start first asks the Confirm modal, over this plan."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+s", "start", "Start"),
    ]

    def __init__(
        self,
        services: Services,
        kind: JobKind,
        source: str,
        target: str,
        *,
        target_size: int = 0,
        confirm: Disk | None = None,
        also: Sequence[Disk] = (),
    ) -> None:
        super().__init__()
        self.services = services
        self.confirm = confirm
        self.also = tuple(also)  # more targets, written from the same read
        self.kind = kind
        self.source = source
        self.target = target
        self.target_size = target_size
        self.view: PlanView | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(
            Text(f"{VERBS[self.kind]} plan: nothing has been written yet."),
            classes="screen-heading",
        )
        if self.also:
            yield Label(
                Text(
                    f"{len(self.also) + 1} targets, written from one read: shown for"
                    f" {self.target}; {', '.join(d.path for d in self.also)} each get their"
                    " own plan (their own size and growth), checks, verify and result."
                ),
                classes="screen-subheading",
                id="plan-targets",
            )
        with Horizontal(id="plan-sides"):
            yield LayoutView(columns=SOURCE, id="plan-left")
            right = ("#", "Size", "FS", "Copy") if self.kind is JobKind.SAVE else TARGET
            yield LayoutView(columns=right, id="plan-right")
        yield LockedPanel(id="plan-locked")
        with Horizontal(id="plan-options"):
            if self.kind is not JobKind.SAVE:
                with RadioSet(id="grow"):
                    for i, (_, words) in enumerate(GROW_LABELS):
                        yield RadioButton(words, value=i == 0)
            verify = {
                JobKind.CLONE: "Read the target back and compare (verify)",
                JobKind.SAVE: "Re-read the image after saving (verify)",
                JobKind.RESTORE: "Read the target back and compare with the image (verify)",
            }[self.kind]
            with Vertical(id="plan-checks"):
                yield Checkbox(verify, value=True, id="verify")
                yield Checkbox("Power off when done (only if all went well)", id="power-off")
                if self.kind is not JobKind.RESTORE:  # ticked when SMART worries (_show)
                    yield Checkbox("Rescue mode (the source is failing)", id="rescue")
        if self.kind is not JobKind.SAVE:
            yield from self._after_copy()
        health = Static("", id="plan-health")
        health.display = False  # shown only for a worn or failing source
        yield health
        yield Static("", id="plan-status")
        with Horizontal(classes="buttons"):
            yield Button("Back", id="back")
            yield Button(
                f"Start {VERBS[self.kind].lower()}", id="start", variant="primary", disabled=True
            )
        yield Footer()

    def _after_copy(self) -> ComposeResult:
        """The post-copy pass's choices and what it will do."""
        with Horizontal(id="plan-after"):
            yield Label("After the copy:", id="plan-after-label")
            yield Input(
                placeholder="new host name (empty: keep)",
                id="hostname",
                disabled=bool(self.also),  # a name names one machine
                max_length=63,
            )
            yield Checkbox("New IDs (keep beside the source)", id="new-ids")
            yield Checkbox("UEFI boot entry", value=self._own_disk(), id="efi-entry")
        yield Static("", id="plan-after-text")

    def _own_disk(self) -> bool:
        """This machine's own fixed disk, in the live system: an NVRAM entry by default."""
        disk = self.confirm
        if disk is None or disk.removable or disk.transport in {"usb", "loop", "file", ""}:
            return False
        return any(os.path.isdir(m) for m in LIVE_MEDIUM_MOUNTS)

    def postcopy(self) -> PostcopyOptions:
        if self.kind is JobKind.SAVE:
            return PostcopyOptions(enabled=False)
        return PostcopyOptions(
            hostname=self.query_one("#hostname", Input).value.strip(),
            new_ids=self.query_one("#new-ids", Checkbox).value,
            efi_entry=self.query_one("#efi-entry", Checkbox).value,
        )

    def _show_after(self) -> None:
        if self.kind is JobKind.SAVE:
            return
        from clonebay.engine.postcopy.preview import preview

        volumes = self.view.volumes if self.view else ()
        lines = [*preview(self.postcopy(), volumes), *(self.view.facts if self.view else ())]
        self.query_one("#plan-after-text", Static).update(Text("\n".join(lines)))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "hostname":
            self._show_after()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if event.checkbox.id in {"new-ids", "efi-entry"}:
            self._show_after()

    def on_mount(self) -> None:
        for view in self.query(LayoutView):
            view.show(None, "planning…")
        self.plan(Grow.PROPORTIONAL)

    def grow(self) -> Grow:
        if self.kind is JobKind.SAVE:
            return Grow.PROPORTIONAL
        index = self.query_one("#grow", RadioSet).pressed_index
        return GROW_LABELS[max(index, 0)][0]

    @work(thread=True, exclusive=True, exit_on_error=False)
    def plan(self, grow: Grow) -> None:
        try:
            view = make_view(
                self.services,
                self.kind,
                self.source,
                self.target,
                target_size=self.target_size,
                grow=grow,
                also=[d.path for d in self.also],
            )
        except BaseException:
            self.app.call_from_thread(self._refused)
            raise
        self.app.call_from_thread(self._show, view)

    def _show(self, view: PlanView) -> None:
        self.view = view
        self.query_one("#plan-left", LayoutView).show(view.left)
        self.query_one("#plan-right", LayoutView).show(view.right)
        self.query_one("#plan-status", Static).update("")
        health = self.query_one("#plan-health", Static)
        self.query_one(LockedPanel).show(view.locked, view.hibernated)
        health.update(Text("\n".join(view.health)))
        health.display = bool(view.health)
        if view.health and self.kind is not JobKind.RESTORE:
            self.query_one("#rescue", Checkbox).value = True  # SMART worries: offered, ticked
        self._show_after()
        start = self.query_one("#start", Button)
        start.disabled = False
        start.focus()
        self.refresh_bindings()

    def _refused(self) -> None:
        self.view = None
        self.query_one("#plan-health", Static).display = False
        self.query_one(LockedPanel).show(())
        self.query_one("#start", Button).disabled = True
        for view in self.query(LayoutView):
            view.show(None, "")
        self.query_one("#plan-status", Static).update(
            Text("This job cannot run as planned (see the message). Go back and pick again.")
        )

    def unlocked(self) -> None:
        """A key opened a volume of the source: the plan is made again with it."""
        self.query_one("#start", Button).disabled = True
        self.view = None
        self.query_one(LockedPanel).show(())
        self.refresh_bindings()
        for view in self.query(LayoutView):
            view.show(None, "planning…")
        self.plan(self.grow())

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        self.query_one("#start", Button).disabled = True
        self.plan(self.grow())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()
        else:
            self.dismiss(None)

    def action_start(self) -> None:
        if self.view is None:
            return
        from clonebay.engine.postcopy.preview import check_hostname

        postcopy = self.postcopy()
        try:
            check_hostname(postcopy.hostname, self.view.volumes)
        except UsageError as exc:
            self.query_one("#plan-status", Static).update(Text(exc.message))
            self.query_one("#hostname", Input).focus()
            return
        request = JobRequest(
            self.kind,
            self.source,
            self.target,
            self.grow(),
            self.query_one("#verify", Checkbox).value,
            self.view.totals,
            self.query_one("#power-off", Checkbox).value,
            tuple(d.path for d in self.also),
            postcopy,
            rescue=self.kind is not JobKind.RESTORE and self.query_one("#rescue", Checkbox).value,
        )
        if self.confirm is None:
            self.dismiss(request)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.dismiss(request)

        self.app.push_screen(
            ConfirmModal(self.services, self.confirm, VERBS[self.kind], self.also), answered
        )

    def action_back(self) -> None:
        self.dismiss(None)
