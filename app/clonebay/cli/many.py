"""What ``clone`` and ``restore`` print when they wrote several targets from one read.

One line per target says whether it is complete (and verified) or incomplete, and why; a last
line names each group plainly, since an incomplete disk must not be used. The exit code:
0 when every target succeeded; otherwise the exit code of the error of the first failed target
in the order the targets were given (docs/cli.md). One rule, easy to script against: a failed
write and a failed verify on two targets give the code of the one named first.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from clonebay.cli.common import emit_result
from clonebay.cli.fixup import AfterMany
from clonebay.cli.rescue import DONE_WITH_ERRORS
from clonebay.engine import TargetOutcome
from clonebay.units import human_size


def exit_code(outcomes: Sequence[TargetOutcome], after: AfterMany | None = None) -> int:
    """0, or the exit code of the first failed target's error (module docstring); a target
    whose copy is complete but whose post-copy pass failed counts with that error (10), and
    so does a rescue that left unreadable ranges (10)."""
    for outcome in outcomes:
        if outcome.error is not None:
            return outcome.error.exit_code
        if after is not None and outcome.target in after.errors:
            return after.errors[outcome.target].exit_code
    return DONE_WITH_ERRORS if any(o.unreadable for o in outcomes) else 0


def outcome_line(outcome: TargetOutcome, verify: bool) -> str:
    if outcome.error is None:
        checked = f", {outcome.verified_chunks} chunks verified" if verify else ""
        return f"  ok      {outcome.target}: {human_size(outcome.written)} written{checked}"
    first, *rest = outcome.error.message.splitlines()
    more = "".join(f"\n            {line}" for line in rest)
    return f"  FAILED  {outcome.target}: {outcome.error.title.lower()}: {first}{more}"


def report(
    args: argparse.Namespace,
    verb: str,
    source: str,
    outcomes: Sequence[TargetOutcome],
    seconds: float,
    *,
    verify: bool,
    after: AfterMany | None = None,
    warnings: Sequence[str] = (),
) -> int:
    """Print every target's outcome (text or JSON), and what the post-copy pass did on each
    complete one (``after``); returns the exit code. ``warnings``: about the source (its
    SMART health), printed before the job; here they go into the JSON result."""
    good = [o.target for o in outcomes if o.ok]
    bad = [o.target for o in outcomes if not o.ok]
    lines = [f"{verb} {source} to {len(good)} of {len(outcomes)} targets in {seconds:.1f} s"]
    for outcome in outcomes:
        lines.append(outcome_line(outcome, verify))
        lines += [f"            {line}" for line in outcome.done]
        lines += [f"            warning: {line}" for line in outcome.warnings]
        lines += [
            f"            {line}" for line in (after.lines.get(outcome.target, []) if after else [])
        ]
    state = "complete and verified" if verify else "complete (not verified)"
    if good:
        lines.append(f"{state}: {', '.join(good)}")
    if bad:
        lines.append(
            f"INCOMPLETE, do not use: {', '.join(bad)} (run the {verb.removesuffix('d')}"
            " again onto them, or wipe them)"
        )
    data: dict[str, Any] = {
        "ok": not bad,
        "warnings": list(warnings),
        "targets": [
            {
                "target": o.target,
                "ok": o.ok,
                "error": None if o.error is None else o.error.message,
                "exit_code": 0 if o.error is None else o.error.exit_code,
                "written_bytes": o.written,
                "verified_bytes": o.verified,
                "verified_chunks": o.verified_chunks,
                "fixups": o.done,
                "warnings": o.warnings,
                "unreadable": [vars(e) for e in o.unreadable],
                "postcopy": (after.data.get(o.target, {}).get("postcopy") if after else None),
                "postcopy_error": (
                    after.errors[o.target].message if after and o.target in after.errors else None
                ),
            }
            for o in outcomes
        ],
    }
    emit_result(args, data, "\n".join(lines))
    return exit_code(outcomes, after)
