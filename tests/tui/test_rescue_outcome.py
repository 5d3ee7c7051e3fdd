"""The TUI's clone and save with rescue on (JobRequest.rescue, the Plan's "Rescue" choice), run
through the same job functions as its screens (tui/jobs.py run_job) on a source that fails
chosen sectors (tests/faultfile.py): the Result says "done with errors", lists each unreadable
range and the map, and a power-off that waits for a job that "went well" does not happen."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from clonebay.engine.postcopy import PostcopyOptions
from clonebay.tui.jobs import JobKind, JobRequest, run_job
from tests.engine.test_rescue import SECTOR, Source, read_map, source  # noqa: F401 (fixture)
from tests.faultfile import failing


@pytest.mark.parametrize("kind", [JobKind.CLONE, JobKind.SAVE])
def test_a_rescue_that_left_bad_sectors_ends_done_with_errors(
    source: Source,  # noqa: F811 (the fixture)
    tmp_path: Path,
    kind: JobKind,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLONEBAY_RESCUE_MAPS", str(tmp_path / "maps"))
    bad = (source.big_byte(0.4) + SECTOR, SECTOR)
    target = tmp_path / ("copy.img" if kind is JobKind.CLONE else "copy.image")
    with failing(source.disk, tmp_path / "mnt", *bad) as disk:
        request = JobRequest(
            kind,
            str(disk),
            str(target),
            verify=True,
            power_off=True,
            postcopy=PostcopyOptions(enabled=False),
            rescue=True,
        )
        outcome = run_job(request, lambda tick: None, threading.Event())
    assert outcome.status == "errors" and not outcome.ok  # no power-off after it
    text = "\n".join(outcome.details)
    assert "Unreadable: 512 B in 1 range(s)" in text, text
    where = f"byte {bad[0]} of {disk}" if kind is JobKind.CLONE else "of p1"
    assert "  512 bytes at " in text and where in text, text
    maps = (
        list((tmp_path / "maps").glob("*.map"))
        if kind is JobKind.CLONE
        else [Path(f"{target}.map")]
    )
    (mapfile,) = maps
    assert [(a, n) for a, n, s in read_map(mapfile) if s == "-"] == [bad]
    assert str(mapfile) in text
