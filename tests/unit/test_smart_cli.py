"""SMART health in the CLI: ``probe`` and ``list`` report it (text and ``--json``), and clone and
save warn before they read a worn or failing disk, without refusing.

probe and list run on what this machine has (image files, its own disks: no SMART here, so
"unknown" with the reason). No disk of this host fails, so the warning tests hand the CLI a
failing disk's health: the parser's verdict on QEMU's SATA disk with a failed overall status
and 12 pending sectors (tests/data/smart/sata.json, edited), read in place of smartctl's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clonebay import cli
from clonebay.system import smart
from tests.unit.test_smart import captured, counter

MIB = 1 << 20


def blank(path: Path, size: int = 4 * MIB) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> smart.Health:
    data = captured("sata")
    data["smart_status"]["passed"] = False
    data["ata_smart_attributes"]["table"].append(counter(197, "Current_Pending_Sector", 12))
    health = smart.parse(data, exit_status=8)
    assert health.verdict is smart.Verdict.FAILING
    monkeypatch.setattr(smart, "read_health", lambda path, **_: health)
    return health


def result_of(out: str) -> dict[str, Any]:
    """The "result" event of a --json command's output."""
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert data["event"] == "result"
    return data


def test_probe_reports_health(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    disk = blank(tmp_path / "disk.img")
    assert cli.main(["probe", "--json", str(disk)]) == 0
    health = json.loads(capsys.readouterr().out)["health"]
    assert health["verdict"] == "unknown"
    assert health["reasons"] == ["an image file has no SMART"]
    assert cli.main(["probe", str(disk)]) == 0
    assert "\nhealth: unknown: an image file has no SMART\n" in capsys.readouterr().out


def test_list_reports_every_disks_health(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list", "--json"]) == 0
    disks = [d for d in json.loads(capsys.readouterr().out) if d.get("kind", "disk") == "disk"]
    for disk in disks:
        assert disk["health"]["verdict"] in {"good", "warning", "failing", "unknown"}, disk
        if disk["health"]["verdict"] == "unknown":
            assert disk["health"]["reasons"], disk  # always says why
    assert cli.main(["list"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split()[:4] == ["DISK", "SIZE", "TRANSPORT", "HEALTH"] or not disks


def test_save_of_a_failing_disk_warns_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], failing: smart.Health
) -> None:
    disk = blank(tmp_path / "disk.img")
    assert cli.main(["save", "--json", str(disk), str(tmp_path / "image")]) == 0
    out, err = capsys.readouterr()
    warnings = result_of(out)["warnings"]
    assert warnings[:3] == [
        f"SMART health of {disk}: failing (SMART overall test FAILED; 12 pending sectors)",
        "a disk in this state can fail for good under a long read: copy it before anything else,"
        " and read it only once",
        "if it cannot be read to the end, --rescue reads what it still gives, the easy data first",
    ]
    assert "SMART" not in err  # --json: in the result only
    assert (tmp_path / "image" / "manifest.json").is_file()  # warned, not refused
    assert cli.main(["save", str(disk), str(tmp_path / "image2")]) == 0
    out, err = capsys.readouterr()
    assert f"warning: SMART health of {disk}: failing (" in err
    assert "SMART" not in out


def test_clone_of_a_failing_disk_warns_before_it_asks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], failing: smart.Health
) -> None:
    disk, target = blank(tmp_path / "disk.img"), blank(tmp_path / "target.img")
    assert cli.main(["clone", "--dry-run", "--json", str(disk), str(target)]) == 0
    assert result_of(capsys.readouterr().out)["warnings"][0].startswith(
        f"SMART health of {disk}: failing"
    )
    # No terminal and no --yes: refused at the question, the warning already said.
    assert cli.main(["clone", str(disk), str(target)]) == 2
    err = capsys.readouterr().err
    assert err.index("warning: SMART health") < err.index("no terminal to confirm it on")
    mapfile = str(tmp_path / "rescue.map")
    assert (
        cli.main(["clone", "--yes", "--rescue", "--mapfile", mapfile, str(disk), str(target)]) == 0
    )
    err = capsys.readouterr().err
    assert "warning: SMART health" in err and "--rescue reads" not in err  # asked for already
