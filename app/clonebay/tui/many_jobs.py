"""A clone or restore onto several targets, from one read (engine/target/fanout.py), as the TUI
shows it: every target's state while it runs, and its own line in the Result.

The job ends "done" only when every target is complete (and verified, when asked); when some
failed it ends "failed", and the Result says plainly which targets are complete and which are
incomplete and must not be used. A cancel stops all of them.
"""

from __future__ import annotations

import threading

from clonebay.engine import CloneOptions, TargetOutcome, clone_many, jobs
from clonebay.errors import CancelledError, ClonebayError
from clonebay.model import Progress
from clonebay.tui.jobs import (
    SAME_IDS,
    VERBS,
    JobKind,
    JobRequest,
    Outcome,
    OverallMeter,
    PerRegionMeter,
    StateSink,
    TargetLine,
    TickSink,
    after_copy,
    next_step,
)
from clonebay.units import human_size


def run_many(
    request: JobRequest, sink: TickSink, cancel: threading.Event, on_state: StateSink | None
) -> Outcome:
    """Run a job with several targets (in a worker thread); refusals are raised, as for one."""
    targets = list(request.targets)
    if request.kind is JobKind.CLONE:
        copying = PerRegionMeter("Copying", dict(request.totals), sink)
        verifying = OverallMeter({"read": "Verifying"}, sink)

        def meter(p: Progress) -> None:
            (verifying if p.region == "verify" else copying)(p)

        options = CloneOptions(
            grow=request.grow, fit=request.grow, verify=request.verify, keys=request.keys
        )
        outcomes = clone_many(
            request.source, targets, options, progress=meter, cancel=cancel, on_state=on_state
        )
    else:
        phases = {"write": "Writing", "read": "Verifying", "check": "Checking image"}
        restore = jobs.RestoreOptions(verify=request.verify, grow=request.grow, fit=request.grow)
        outcomes = jobs.restore_many(
            request.source,
            targets,
            restore,
            progress=OverallMeter(phases, sink),
            cancel=cancel,
            on_state=on_state,
        )
    after = _after_each(request, outcomes)
    return outcome_of(request, outcomes, after)


def _after_each(request: JobRequest, outcomes: list[TargetOutcome]) -> list[str]:
    """The post-copy pass on every complete target; a pass that fails becomes a warning for
    that target (its copy is complete) and the others still run."""
    lines = []
    for outcome in outcomes:
        if not outcome.ok:
            continue
        try:
            done, warnings = after_copy(request, outcome.target)
        except ClonebayError as exc:
            outcome.warnings.append(f"the post-copy pass stopped: {exc.message}")
            continue
        lines += [f"{outcome.target}: {line}" for line in done]
        outcome.warnings.extend(warnings)
    return lines


def target_line(outcome: TargetOutcome, verify: bool) -> TargetLine:
    if outcome.error is None:
        checked = f", {outcome.verified_chunks} chunks verified" if verify else ", not verified"
        return TargetLine(
            outcome.target,
            True,
            f"✔ {outcome.target}: complete{checked} ({human_size(outcome.written)} written)",
        )
    first = outcome.error.message.splitlines()[0]
    return TargetLine(
        outcome.target,
        False,
        f"✘ {outcome.target}: INCOMPLETE, do not use it ({outcome.error.title.lower()}: {first})",
    )


def outcome_of(
    request: JobRequest, outcomes: list[TargetOutcome], after: list[str] | None = None
) -> Outcome:
    """The Result screen's words for every target (``after``: what the post-copy pass did)."""
    verb = VERBS[request.kind].lower()
    lines = tuple(target_line(o, request.verify) for o in outcomes)
    good = [o for o in outcomes if o.ok]
    warnings = tuple(f"{o.target}: {w}" for o in outcomes for w in o.warnings)
    details = (*(f"{o.target}: {d}" for o in good for d in o.done), *(after or ()))
    if all(isinstance(o.error, CancelledError) for o in outcomes if o.error) and not good:
        return Outcome(
            request.kind,
            "cancelled",
            f"The {verb} was cancelled.",
            details,
            "",
            "Every target is incomplete and must not be booted: run the job again, or wipe"
            " the disks before using them for something else.",
            "Cancelled",
            warnings,
            lines,
        )
    verify = (
        "Verified: every complete target was read back and matches."
        if request.verify
        else "Not verified (turned off in the plan)."
    )
    if len(good) == len(outcomes):
        what_next = SAME_IDS if request.kind is JobKind.CLONE else _RESTORE_NEXT
        if request.postcopy.enabled and request.postcopy.new_ids:
            what_next = next_step(request)
        headline = f"{request.source} was written onto all {len(outcomes)} targets."
        return Outcome(
            request.kind, "done", headline, details, verify, what_next, "", warnings, lines
        )
    failed = [o for o in outcomes if not o.ok]
    first = failed[0].error
    return Outcome(
        request.kind,
        "failed",
        f"The {verb} failed on {len(failed)} of {len(outcomes)} targets.",
        details,
        verify if good else "",
        f"Incomplete, do not use: {', '.join(o.target for o in failed)}. Run the {verb} again"
        " onto them, or wipe them before using them for something else."
        + (f" Complete: {', '.join(o.target for o in good)}." if good else ""),
        first.title if first is not None else "Error",
        warnings,
        lines,
    )


_RESTORE_NEXT = (
    "If the disk the image was saved from is still in this machine, remove one of them"
    " before the first boot: every target carries the same IDs."
)
