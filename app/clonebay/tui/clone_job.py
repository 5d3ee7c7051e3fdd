"""The clone job as the TUI runs it (one target; several go through tui/many_jobs.py): a new
clone, or the interrupted clone of the same two disks gone on with from its target's last
checkpoint (``resume``; engine/clone_state.py says what its journal holds). A resumed clone is
planned with the grow mode the question found and keeps its rescue (tui/screens/
clone_resume_ask.py); its Result says how much was on the target already.
"""

from __future__ import annotations

import threading

from clonebay.engine import CloneOptions, Grow, clone, jobs
from clonebay.model import Progress
from clonebay.tui.jobs import (
    JobKind,
    JobRequest,
    Outcome,
    OverallMeter,
    PerRegionMeter,
    TickSink,
    after_copy,
    next_step,
    unreadable_lines,
)
from clonebay.units import human_size


def run_clone(request: JobRequest, sink: TickSink, cancel: threading.Event) -> Outcome:
    """Run the clone ``request`` (in a worker thread); errors are raised."""
    options = CloneOptions(
        grow=request.grow,
        fit=request.grow,
        verify=request.verify,
        rescue=jobs.RescueOptions() if request.rescue else None,
        resume=request.resume,
        keys=request.keys,
    )
    before = jobs.clone_journal(request.source, request.target) if request.resume else None
    copying = PerRegionMeter("Copying", dict(request.totals), sink)
    verifying = OverallMeter({"read": "Verifying"}, sink)

    def meter(p: Progress) -> None:  # the read-back verify reports as region "verify"
        (verifying if p.region == "verify" else copying)(p)

    result = clone(request.source, request.target, options, progress=meter, cancel=cancel)
    verify = (
        f"Verified: all {result.verified_chunks} chunks read back from the target match."
        if request.verify
        else "Not verified (turned off in the plan)."
    )
    lines, warnings = after_copy(request, request.target)
    bad = [(f"byte {e.start} of {request.source}", e.length) for e in result.unreadable]
    return Outcome(
        JobKind.CLONE,
        "errors" if bad else "done",
        f"{request.source} was cloned onto {request.target}.",
        (
            *([resumed_line(before)] if before is not None else []),
            f"{human_size(result.copied_bytes)} copied.",
            *unreadable_lines(bad, result.rescue_map),
            *result.done,
            *lines,
        ),
        verify,
        next_step(request),
        warnings=(*result.warnings, *warnings),
    )


def resumed_line(before: jobs.InterruptedClone) -> str:
    """The Result's first line for a clone that went on from its target's last checkpoint."""
    return (
        "Resumed: went on from the last checkpoint"
        f" ({human_size(before.written_bytes)} of data was on the target already)."
    )


def resume_request(source: str, target: str, state: jobs.InterruptedClone) -> JobRequest:
    """The clone that goes on with the interrupted one ``state`` says: its grow mode (the
    fingerprint tells it) and its rescue."""
    grow = state.grow or Grow.PROPORTIONAL
    return JobRequest(JobKind.CLONE, source, target, grow, rescue=state.rescue, resume=True)
