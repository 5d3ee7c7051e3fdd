"""The save job as the TUI runs it: a new image, one started again over an interrupted save
(``overwrite``), or the interrupted save gone on with from its last checkpoint (``resume``,
engine/save_state.py says what it holds). A resumed rescue keeps its map and its Result lists
the unreadable ranges as any rescue's does.
"""

from __future__ import annotations

import os
import threading

from clonebay.engine import jobs
from clonebay.errors import CancelledError, VerifyError
from clonebay.tui.jobs import (
    JobKind,
    JobRequest,
    Outcome,
    OverallMeter,
    PerRegionMeter,
    TickSink,
    unreadable_lines,
)
from clonebay.units import human_size


def run_save(request: JobRequest, sink: TickSink, cancel: threading.Event) -> Outcome:
    """Run the save ``request`` (in a worker thread); errors are raised."""
    meter = PerRegionMeter("Saving", dict(request.totals), sink)
    before = jobs.interrupted_save(request.target) if request.resume else None
    options = save_options(request, before)
    rescue = options.rescue
    manifest = jobs.save(request.source, request.target, options, progress=meter, cancel=cancel)
    summary = jobs.manifest_summary(manifest)
    copied, stored = summary["copied_bytes"], summary["stored_bytes"]
    bad = [(f"offset {u.offset} of {u.region}", u.length) for u in manifest.unreadable]
    rescue_map = str(jobs.rescue_map_path(request.target, rescue)) if rescue else ""
    details = (
        *([resumed_line(before)] if before is not None else []),
        f"{human_size(copied)} of data saved as {human_size(stored)} in {summary['packs']}"
        f" pack(s), {summary['regions']} regions.",
        f"{human_size(summary['zero_bytes'])} of zeros and"
        f" {human_size(summary['dedup_bytes'])} of duplicates took no space.",
        *unreadable_lines(bad, rescue_map),
    )
    verify = "Not verified (turned off in the plan)."
    if request.verify:
        if cancel.is_set():
            raise CancelledError("cancelled by the user before the image was verified")
        report = jobs.verify_saved(request.target, OverallMeter({"read": "Verifying"}, sink))
        if not report.ok:
            first = report.problems[0]
            raise VerifyError(
                f"the image {request.target} was written but {len(report.problems)} frame(s)"
                f" do not read back correctly; first: {first}. Save it again, to other media"
            )
        verify = f"Verified: all {report.frames} frames of the image read back correctly."
    return Outcome(
        JobKind.SAVE,
        "errors" if bad else "done",
        f"{request.source} was saved into the image {request.target}.",
        details,
        verify,
        "Keep the image folder whole (manifest.json, index/, packs/). Restore it with"
        " Restore image; the target must be at least as large as the source disk.",
        warnings=tuple(summary["warnings"]),
    )


def save_options(request: JobRequest, before: jobs.InterruptedSave | None) -> jobs.SaveOptions:
    """The engine's options for ``request``; ``before``: the interrupted save it resumes."""
    rescue = None
    if request.rescue or (before is not None and before.rescue):  # a resume keeps its map
        rescue = jobs.RescueOptions(map_path=before.rescue_map if before is not None else "")
    if request.resume:
        return jobs.SaveOptions(rescue=rescue, resume=True, keys=request.keys)
    # a rescue run again after a save that stopped on a read error: its incomplete image goes
    left = os.path.isdir(request.target) and not os.path.exists(f"{request.target}/manifest.json")
    return jobs.SaveOptions(
        rescue=rescue,
        overwrite=request.overwrite or (rescue is not None and left),
        keys=request.keys,
    )


def resumed_line(before: jobs.InterruptedSave) -> str:
    """The Result's first line for a save that went on from a checkpoint."""
    return (
        f"Resumed: went on from the last checkpoint ({human_size(before.saved_bytes)} of data"
        " had been saved before)."
    )
