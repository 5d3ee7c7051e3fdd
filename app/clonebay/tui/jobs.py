"""The jobs the TUI starts, in the engine's own calls, and what the screens show of them.

A JobRequest is what the Plan screen hands to the Progress screen; ``run_job`` runs it in a
worker thread through the same engine functions as the CLI (engine.clone in tui/clone_job.py,
engine.jobs.save in tui/save_job.py, engine.jobs.restore, engine.jobs.verify_image) and returns
an Outcome for the Result screen.

The engine's Progress events do not all count the same way: the copy pipeline (save, clone)
reports bytes done per region, restore and verify report bytes done of the whole job. The two
meters below turn either into one Tick with the region's and the whole phase's figures, so the
Progress screen draws an overall bar whatever the job.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from clonebay.engine import Grow, jobs
from clonebay.engine.postcopy.options import PostcopyOptions
from clonebay.errors import ClonebayError, DeviceError
from clonebay.fs.keyring import Keyring
from clonebay.model import Progress
from clonebay.units import human_size

SAME_IDS = (
    "Remove the source disk before the first boot: both disks now carry the same IDs"
    " (disk GUID, partition GUIDs, filesystem UUIDs) and the firmware or the OS may boot"
    " or mount the wrong one."
)


RESUME_SAID = "with --resume to go on from its last checkpoint"  # engine/save.py, resume/clone.py


class JobKind(enum.Enum):
    CLONE = "clone"
    SAVE = "save"
    RESTORE = "restore"


VERBS = {JobKind.CLONE: "Clone", JobKind.SAVE: "Save", JobKind.RESTORE: "Restore"}


@dataclass(frozen=True)
class JobRequest:
    """One job as the user confirmed it. ``source`` is a disk (clone, save) or an image
    (restore); ``target`` a disk (clone, restore) or the new image directory (save).
    ``totals``: bytes per region the plan expects, for the overall bar of pipeline jobs."""

    kind: JobKind
    source: str
    target: str
    grow: Grow = Grow.PROPORTIONAL
    verify: bool = True
    totals: tuple[tuple[str, int], ...] = ()
    power_off: bool = False  # after a job that ended well
    also: tuple[str, ...] = ()  # more targets, written from the same read (clone, restore)
    postcopy: PostcopyOptions = field(default_factory=PostcopyOptions)  # after clone, restore
    rescue: bool = False  # clone, save: read a failing source (docs/cli.md, Failing disks)
    resume: bool = False  # save, clone: go on from the interrupted job's checkpoint (--resume)
    overwrite: bool = False  # save: ``target`` holds an interrupted save; start it again
    keys: Keyring | None = field(default=None, repr=False, compare=False)  # Services.run's

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target, *self.also)

    @property
    def title(self) -> str:
        how = " (resumed)" if self.resume else ""
        return f"{VERBS[self.kind]}{how} {self.source} → {', '.join(self.targets)}"


@dataclass(frozen=True)
class Tick:
    """One progress update as the screen draws it."""

    phase: str  # "Copying", "Saving", "Writing", "Verifying"
    region: str
    region_done: int
    region_total: int  # 0 when the engine reports only the whole job
    done: int
    total: int
    rate: float
    eta: float | None
    bottleneck: str


TickSink = Callable[[Tick], None]


class PerRegionMeter:
    """Progress of the copy pipeline: ``done``/``total`` are the region's own bytes."""

    def __init__(self, phase: str, totals: dict[str, int], sink: TickSink) -> None:
        self.phase = phase
        self.totals = dict(totals)
        self.done: dict[str, int] = {}
        self.sink = sink

    def __call__(self, p: Progress) -> None:
        self.done[p.region] = p.done
        self.totals[p.region] = max(self.totals.get(p.region, 0), p.total)
        done = sum(self.done.values())
        total = max(sum(self.totals.values()), done)
        self.sink(
            Tick(
                self.phase,
                p.region,
                p.done,
                p.total,
                done,
                total,
                p.bytes_per_second,
                p.eta_seconds,
                p.bottleneck,
            )
        )


class OverallMeter:
    """Progress of restore and verify: ``done``/``total`` count the whole job; the phase
    follows the busy stage ("write" while writing, "read" while reading the target back)."""

    def __init__(self, phases: dict[str, str], sink: TickSink) -> None:
        self.phases = phases
        self.sink = sink

    def __call__(self, p: Progress) -> None:
        phase = self.phases.get(p.bottleneck, next(iter(self.phases.values())))
        self.sink(
            Tick(phase, p.region, 0, 0, p.done, p.total, p.bytes_per_second, p.eta_seconds, "")
        )


@dataclass(frozen=True)
class TargetLine:
    """One target of a job with several: how it ended, in a line."""

    target: str
    ok: bool
    text: str


StateSink = Callable[[str, str], None]  # (target, "writing" | "finishing" | "done" | "failed")


@dataclass(frozen=True)
class Outcome:
    """What the Result screen says: ``status`` is "done", "errors" (done, but a rescue left
    unreadable sectors: zeros in the copy), "failed" or "cancelled"."""

    kind: JobKind
    status: str
    headline: str
    details: tuple[str, ...] = ()
    verify: str = ""
    next_step: str = ""
    error_title: str = ""
    warnings: tuple[str, ...] = field(default=())
    targets: tuple[TargetLine, ...] = ()  # a job with several targets: each one's end
    rescue_offer: bool = False  # the source gave read errors: offer the job again, rescuing
    resume_offer: bool = False  # a save or clone stopped after a checkpoint: offer to go on

    @property
    def ok(self) -> bool:
        return self.status == "done"


def run_job(
    request: JobRequest,
    sink: TickSink,
    cancel: threading.Event,
    on_state: StateSink | None = None,
) -> Outcome:
    """Run ``request`` to the end (call it in a worker thread); errors are raised. A job with
    several targets reports each target's state to ``on_state`` (tui/many_jobs.py)."""
    if request.also:
        from clonebay.tui.many_jobs import run_many

        return run_many(request, sink, cancel, on_state)
    if request.kind is JobKind.CLONE:
        from clonebay.tui.clone_job import run_clone

        return run_clone(request, sink, cancel)
    if request.kind is JobKind.SAVE:
        from clonebay.tui.save_job import run_save

        return run_save(request, sink, cancel)
    return _restore(request, sink, cancel)


def unreadable_lines(bad: list[tuple[str, int]], rescue_map: str) -> list[str]:
    """A rescue's unreadable ranges, (where, bytes), for the Result (the first 10), and where
    its map is."""
    if not rescue_map:
        return []
    if not bad:
        return [f"Rescue: every used byte was read (map: {rescue_map})."]
    lines = [
        f"Unreadable: {human_size(sum(n for _, n in bad))} in {len(bad)} range(s), zeros in the"
        f" copy (map: {rescue_map}):"
    ]
    lines += [f"  {n} bytes at {where}" for where, n in bad[:10]]
    return lines + ([f"  ... and {len(bad) - 10} more"] if len(bad) > 10 else [])


def after_copy(request: JobRequest, target: str) -> tuple[list[str], list[str]]:
    """The post-copy pass on ``target`` after the copy: its lines and warnings. A pass that
    fails raises PostcopyError (the copy itself is complete)."""
    from clonebay.engine.postcopy import copy_facts, facts, run_pass

    options = request.postcopy
    if not options.enabled:
        return ["After the copy: no post-copy pass (turned off in the plan)."], []
    if request.kind is JobKind.CLONE:
        source = facts.from_disk(request.source)
    else:
        source = facts.from_image(request.source)
    report = run_pass(target, options, copy_facts(source, target))
    lines = [f"After the copy: {line}" for line in report.lines()] or [
        "After the copy: nothing needed changing."
    ]
    return lines, list(report.warnings)


def next_step(request: JobRequest) -> str:
    """What to do with the written disk(s) before the first boot."""
    if request.postcopy.enabled and request.postcopy.new_ids:
        return (
            "The copy has new disk, partition and filesystem IDs: it may stay in the same"
            " machine as its source."
        )
    if request.kind is JobKind.CLONE:
        return SAME_IDS
    return (
        "If the disk the image was saved from is still in this machine, remove one of them"
        " before the first boot: both carry the same IDs."
    )


def _restore(request: JobRequest, sink: TickSink, cancel: threading.Event) -> Outcome:
    # an image directory is checked in full before the first write: its own step
    meter = OverallMeter({"write": "Writing", "read": "Verifying", "check": "Checking image"}, sink)
    options = jobs.RestoreOptions(verify=request.verify, grow=request.grow, fit=request.grow)
    warnings = jobs.restore(request.source, request.target, options, progress=meter, cancel=cancel)
    verify = (
        "Verified: every chunk read back from the target matches the image."
        if request.verify
        else "Not verified (turned off in the plan)."
    )
    lines, after = after_copy(request, request.target)
    return Outcome(
        JobKind.RESTORE,
        "done",
        f"The image {request.source} was restored onto {request.target}.",
        (*warnings, *lines),
        verify,
        next_step(request),
        warnings=tuple(after),
    )


def failed(request: JobRequest, error: BaseException, cancelled: bool) -> Outcome:
    """The Result screen's words for a job that stopped on ``error``."""
    title = error.title if isinstance(error, ClonebayError) else "Internal error"
    message = error.message if isinstance(error, ClonebayError) else repr(error)
    from clonebay.engine.postcopy import PostcopyError

    verb = VERBS[request.kind].lower()
    offer = unreadable_source(request, error)
    resume = resumable(request, message) and not offer
    if isinstance(error, PostcopyError):
        hint = (
            f"The copy itself is complete and verified; the post-copy pass stopped (see the"
            f" message). Fix the cause, then run 'clonebay fixup {request.target}' from a"
            " shell with the same choices."
        )
    elif "nothing was written" in message.lower():
        hint = f"Nothing was written: {request.target} is as it was."
    elif resume and request.kind is JobKind.CLONE:
        hint = (
            f"{request.target} is incomplete and must not be booted, but what was written up to"
            " the last checkpoint is kept (its journal): Resume goes on from there, reading the"
            " same source disk onto the same target (both are checked), or run the clone again."
        )
    elif resume:
        hint = (
            f"The image {request.target} is incomplete (it has no manifest.json), but what it"
            " holds up to its last checkpoint is kept: Resume goes on from there, reading the"
            " same source disk (it is checked), or delete the image and save again."
        )
    elif request.kind is JobKind.SAVE:
        hint = (
            f"The image {request.target} is incomplete (it has no manifest.json): delete it"
            " and save again."
        )
    else:
        hint = (
            f"{request.target} is incomplete and must not be booted: run the {verb} again,"
            " or wipe the disk before using it for something else."
        )
    if cancelled:
        return Outcome(
            request.kind, "cancelled", f"The {verb} was cancelled.", (message,), "", hint, title,
            resume_offer=resume,
        )  # fmt: skip
    if offer:
        hint = (
            f"{request.source} gave read errors: it may be failing. {hint} Next, clonebay"
            " offers to run the job again in rescue mode: every sector that still reads is"
            " copied, the easy data first, and the rest is listed."
        )
    return Outcome(
        request.kind,
        "failed",
        f"The {verb} failed: {title.lower()}.",
        tuple(message.splitlines()),
        "",
        hint,
        title,
        rescue_offer=offer,
        resume_offer=resume,
    )


def resumable(request: JobRequest, message: str) -> bool:
    """A save or a clone (one target) that stopped after a checkpoint: the engine's message
    says --resume goes on (other messages name --resume too: "no interrupted clone to
    resume", "resume that job with --resume")."""
    kinds = {JobKind.SAVE, JobKind.CLONE}
    return request.kind in kinds and not request.also and RESUME_SAID in message


def unreadable_source(request: JobRequest, error: BaseException) -> bool:
    """A clone or save without rescue that stopped on a read error of its source."""
    return (
        request.kind in {JobKind.CLONE, JobKind.SAVE}
        and not request.rescue
        and not request.also
        and isinstance(error, DeviceError)
        and "read error" in error.message
    )
