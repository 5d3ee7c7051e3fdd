"""The Windows part of the pass: mount each Windows volume (ntfs-3g), then rename it, patch
its boot configuration after an MBR move or new ids, and report its sysprep state and machine
SID (the hive work is in engine/postcopy/windows.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clonebay.engine.postcopy.changes import Skip

if TYPE_CHECKING:
    from clonebay.engine.postcopy.apply import Pass


def run(job: Pass) -> None:
    for inst in job.survey.of_kind("windows"):
        if not inst.editable:
            job.report.skipped.append(Skip(inst.where, "windows edits", inst.why_not))
