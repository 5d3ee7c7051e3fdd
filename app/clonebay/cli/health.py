"""The warning before a job reads a disk whose SMART says it is worn or failing (system/smart.py).

``clone`` and ``save`` call ``source_warning`` once their plan is made and before the question
(or the copy): the lines go to stderr at once, because stdout may be an image stream, and the
command puts them in its result's "warnings" (``--json``). A warning, never a refusal: this
disk may hold the only copy of its data, and now is the time to read it; ``--rescue`` is how.
"""

from __future__ import annotations

import argparse
import sys

RESCUE_HINT = (
    "if it cannot be read to the end, --rescue reads what it still gives, the easy data first"
)


def source_warning(args: argparse.Namespace, source: str) -> list[str]:
    """The SMART warning about ``source`` ([] when it is good or has no SMART), printed."""
    from clonebay.system.smart import job_warning, read_health

    lines = job_warning(source, read_health(source))
    if lines and not getattr(args, "rescue", False):
        lines.append(RESCUE_HINT)
    if not args.json:
        for line in lines:
            print(f"warning: {line}", file=sys.stderr)
    return lines
