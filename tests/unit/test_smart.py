"""SMART verdicts from smartctl's real JSON: QEMU's SATA and NVMe disks as captured in the live
ISO (tests/data/smart/README.md), and copies of them edited field by field into worn and failing
disks, with the exit status bits smartctl sets for each (smartctl(8), RETURN VALUES)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from clonebay.system.smart import Health, Verdict, job_warning, parse

DATA = Path(__file__).resolve().parents[1] / "data" / "smart"


def captured(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def attribute(data: dict[str, Any], number: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = data["ata_smart_attributes"]["table"]
    return next(row for row in rows if row["id"] == number)


def counter(number: int, name: str, raw: int, *, prefail: bool = False) -> dict[str, Any]:
    """An ATA attribute row as smartctl writes it (197 and 198 of a real disk)."""
    row = copy.deepcopy(attribute(captured("sata"), 5))
    row.update(id=number, name=name, thresh=0)
    row["flags"]["prefailure"] = prefail
    row["raw"] = {"value": raw, "string": str(raw)}
    return row


def test_qemu_sata_disk_is_good_with_its_numbers() -> None:
    data = captured("sata")
    health = parse(data)
    assert health.verdict is Verdict.GOOD and health.reasons == ()
    assert health.passed is True
    assert health.reallocated == attribute(data, 5)["raw"]["value"] == 0
    assert health.pending is None and health.uncorrectable is None  # QEMU has no 197, 198
    assert health.temperature == data["temperature"]["current"] == 31
    assert health.text() == "good (SMART passed, 0 reallocated, 31 °C)"


def test_qemu_nvme_disk_is_good_with_its_numbers() -> None:
    data = captured("nvme")
    log = data["nvme_smart_health_information_log"]
    health = parse(data)
    assert health.verdict is Verdict.GOOD and health.passed is True
    assert (health.media_errors, health.percentage_used) == (log["media_errors"], 0)
    assert health.temperature == log["temperature"] == 50
    assert health.reallocated is None  # NVMe has no sector counts


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("virtio", "smartctl: /dev/vda: Unable to detect device type"),
        ("usb", "smartctl: /dev/sdb: Unknown USB bridge [0x46f4:0x0001 (0x000)]"),
        ("usb-scsi", "SMART not supported by this device"),
        ("cdrom", "SMART not supported by this device"),
    ],
)
def test_what_smartctl_cannot_read_is_unknown_with_the_reason(name: str, why: str) -> None:
    health = parse(captured(name))
    assert health == Health(Verdict.UNKNOWN, (why,))
    assert job_warning("/dev/x", health) == []


def test_the_exit_status_given_wins_over_the_recorded_one() -> None:
    health = parse(captured("sata"), exit_status=2)  # bit 1: the device did not open
    assert health.verdict is Verdict.UNKNOWN


def test_a_failed_command_is_unknown_only_when_nothing_was_read() -> None:
    assert parse(captured("sata"), exit_status=4).verdict is Verdict.GOOD
    bare = {"smartctl": {"exit_status": 4, "messages": [{"string": "x", "severity": "error"}]}}
    assert parse(bare) == Health(Verdict.UNKNOWN, ("smartctl: x",))


def test_smart_turned_off_is_unknown() -> None:
    data = captured("sata")
    data["smart_support"]["enabled"] = False
    assert parse(data).reasons == ("SMART is turned off on this device",)


def test_ata_sector_counts_make_a_warning() -> None:
    data = captured("sata")
    attribute(data, 5)["raw"] = {"value": 3, "string": "3"}
    table = data["ata_smart_attributes"]["table"]
    table += [counter(197, "Current_Pending_Sector", 12), counter(198, "Offline_Uncorrectable", 1)]
    health = parse(data)
    assert health.verdict is Verdict.WARNING
    assert health.reasons == (
        "3 reallocated sectors",
        "12 pending sectors",
        "1 uncorrectable sector",
    )
    assert (health.reallocated, health.pending, health.uncorrectable) == (3, 12, 1)
    lines = job_warning("/dev/sda", health)
    assert lines[0] == (
        "SMART health of /dev/sda: warning (3 reallocated sectors; 12 pending sectors;"
        " 1 uncorrectable sector)"
    )


def test_a_raw_count_is_read_as_smartctl_reads_it_for_the_model() -> None:
    data = captured("sata")  # smartctl's reading (its drive database's layout) over raw bytes
    attribute(data, 5)["raw"] = {"value": (7 << 32) | 2, "string": "2"}
    assert parse(data).reallocated == 2


def test_a_failed_overall_status_is_failing() -> None:
    data = captured("sata")
    data["smart_status"]["passed"] = False
    health = parse(data, exit_status=8)
    assert health.verdict is Verdict.FAILING and health.passed is False
    assert health.reasons == ("SMART overall test FAILED",)
    assert "SMART FAILED" in health.text()


def test_a_prefailure_attribute_at_its_threshold_now_is_failing() -> None:
    data = captured("sata")
    row = attribute(data, 5)
    row.update(value=30, worst=30, when_failed="now")
    health = parse(data, exit_status=16)
    assert health.verdict is Verdict.FAILING
    assert health.reasons == ("attribute 5 Reallocated_Sector_Ct is at its failure threshold now",)


def test_an_attribute_at_its_threshold_in_the_past_is_a_warning() -> None:
    data = captured("sata")
    attribute(data, 190)["when_failed"] = "past"
    health = parse(data, exit_status=32)
    assert health.verdict is Verdict.WARNING
    assert health.reasons == ("attribute 190 Airflow_Temperature_Cel was at its threshold",)


@pytest.mark.parametrize(
    ("bits", "verdict", "reason"),
    [
        (16, Verdict.FAILING, "a pre-failure attribute is at its threshold"),
        (32, Verdict.WARNING, "an attribute reached its threshold in the past"),
        (128, Verdict.WARNING, "a self-test in the disk's log failed"),
        (64, Verdict.GOOD, None),  # error log entries: healthy disks collect them too
    ],
)
def test_exit_status_bits_alone(bits: int, verdict: Verdict, reason: str | None) -> None:
    health = parse(captured("sata"), exit_status=bits)
    assert health.verdict is verdict
    assert health.reasons == ((reason,) if reason else ())


def test_nvme_wear_and_media_errors_make_a_warning() -> None:
    data = captured("nvme")
    data["nvme_smart_health_information_log"].update(media_errors=4, percentage_used=103)
    health = parse(data)
    assert health.verdict is Verdict.WARNING
    assert health.reasons == ("NVMe media errors: 4", "NVMe percentage used 103 %")
    assert (health.media_errors, health.percentage_used) == (4, 103)


@pytest.mark.parametrize(
    ("bits", "verdict", "words"),
    [
        (0x04, Verdict.FAILING, "reliability degraded by media or internal errors"),
        (0x09, Verdict.FAILING, "available spare below its threshold, media placed in read-only"),
        (0x02, Verdict.WARNING, "temperature outside its limits"),
    ],
)
def test_nvme_critical_warning_bits(bits: int, verdict: Verdict, words: str) -> None:
    data = captured("nvme")
    data["nvme_smart_health_information_log"]["critical_warning"] = bits
    data["smart_status"]["passed"] = False  # smartctl: FAILED on any critical warning bit
    health = parse(data, exit_status=8)
    assert health.verdict is verdict
    assert len(health.reasons) == 1
    assert health.reasons[0].startswith(f"NVMe critical warning {bits:#x}: {words}")


def test_scsi_grown_defects_and_uncorrected_errors() -> None:
    data = captured("usb-scsi")
    data["smart_support"] = {"available": True, "enabled": True}
    data["smart_status"] = {"passed": True}
    data["scsi_grown_defect_list"] = 7
    data["scsi_error_counter_log"] = {
        "read": {"total_uncorrected_errors": 2},
        "write": {"total_uncorrected_errors": 0},
    }
    health = parse(data, exit_status=0)
    assert health.verdict is Verdict.WARNING
    assert (health.reallocated, health.uncorrectable) == (7, 2)
    assert health.reasons == (
        "7 grown defects (reallocated sectors)",
        "2 uncorrected read, write or verify errors",
    )


def test_the_json_form_carries_verdict_reasons_and_numbers() -> None:
    data = json.loads(json.dumps(parse(captured("nvme")).as_dict()))
    assert data == {
        "verdict": "good",
        "reasons": [],
        "passed": True,
        "reallocated": None,
        "pending": None,
        "uncorrectable": None,
        "media_errors": 0,
        "percentage_used": 0,
        "temperature": 50,
    }
