"""The post-copy pass on a Windows-on-MBR disk (tests/postcopy/windisk.py), end to end from the
command line: a clone onto a larger disk moves the Windows partition, and the BCD store and
MountedDevices must name its new offset (bytes compared, read with ntfscat and hivexget, not
with clonebay); a new signature (--new-ids) follows into both; the computer name is set; a
hive with a pending log stops the pass before it writes, and says the copy is complete."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.edgedisks import clonebay
from tests.postcopy import hives, windisk
from tests.postcopy.windisk import P1_SIZE, P1_START, P2_START, SIGNATURE, MiB

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and FUSE need root")

LOADER = f"\\Objects\\{windisk.LOADER_GUID}\\Elements"
BOOTMGR = f"\\Objects\\{hives.BOOTMGR_ID}\\Elements"


def hivexget(path: Path, key: str, name: str) -> bytes:
    return subprocess.run(
        ["hivexget", str(path), key, name], check=True, capture_output=True
    ).stdout


def partitions(disk: Path) -> dict[int, tuple[int, int]]:
    out = json.loads(
        subprocess.run(["sfdisk", "-J", str(disk)], check=True, capture_output=True).stdout
    )
    table = out["partitiontable"]
    return {i + 1: (p["start"] * 512, p["size"] * 512) for i, p in enumerate(table["partitions"])}


def signature(disk: Path) -> int:
    out = json.loads(
        subprocess.run(["sfdisk", "-J", str(disk)], check=True, capture_output=True).stdout
    )
    return int(out["partitiontable"]["id"], 16)


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    return windisk.build(tmp_path / "win.img", tmp_path / "work").path


def test_a_grown_clone_moves_windows_and_its_boot_data_follows(disk: Path, tmp_path: Path) -> None:
    target = tmp_path / "big.img"
    with open(target, "wb") as f:
        f.truncate(400 * MiB)
    proc = clonebay("clone", str(disk), str(target), "--hostname", "NEWPC-07", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    parts = partitions(target)
    p1, p2 = parts[1][0], parts[2][0]
    assert p1 == P1_START and p2 != P2_START  # the plan grew p1, so p2 moved
    bcd = windisk.ntfs_file(target, p1, parts[1][1], "/Boot/BCD", tmp_path / "BCD")
    want_p2 = hives.bcd_mbr_device(SIGNATURE, p2)
    assert hivexget(bcd, LOADER + "\\11000001", "Element") == want_p2
    assert hivexget(bcd, LOADER + "\\21000001", "Element") == want_p2
    assert hivexget(bcd, BOOTMGR + "\\11000001", "Element") == hives.bcd_mbr_device(
        SIGNATURE, P1_START
    )
    config = "/Windows/System32/config/SYSTEM"
    system = windisk.ntfs_file(target, p2, parts[2][1], config, tmp_path / "SYSTEM")
    assert hivexget(system, "\\MountedDevices", "\\DosDevices\\C:") == hives.mounted_device(
        SIGNATURE, p2
    )
    volume_p1 = "\\??\\Volume{0d1c2b3a-0000-0000-0000-100000000000}"
    assert hivexget(system, "\\MountedDevices", volume_p1) == hives.mounted_device(
        SIGNATURE, P1_START
    )
    assert hivexget(system, "\\MountedDevices", "\\DosDevices\\E:") == hives.mounted_device(
        *windisk.OTHER_DISK
    )
    name_key = "\\ControlSet001\\Control\\ComputerName\\ComputerName"
    assert hivexget(system, name_key, "ComputerName") == b"NEWPC-07\n"
    assert (
        hivexget(system, "\\ControlSet002\\Control\\ComputerName\\ComputerName", "ComputerName")
        == b"OLDPC-LKG\n"
    )
    post = result["postcopy"]
    assert post["hostname"] == "NEWPC-07"
    assert any("not generalized" in w and "S-1-5-21-1111-2222-3333" in w for w in post["warnings"])
    assert any("machine SID S-1-5-21-1111-2222-3333" in f for f in post["facts"])
    # The source is as it was.
    src_system = windisk.ntfs_file(disk, P2_START, 96 * MiB, config, tmp_path / "SRC")
    assert hivexget(src_system, "\\MountedDevices", "\\DosDevices\\C:") == hives.mounted_device(
        SIGNATURE, P2_START
    )


def test_a_new_signature_follows_into_bcd_mountdevices_and_bootsect(
    disk: Path, tmp_path: Path
) -> None:
    proc = clonebay("fixup", str(disk), "--new-ids", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    new = signature(disk)
    assert new != SIGNATURE
    bcd = windisk.ntfs_file(disk, P1_START, P1_SIZE, "/Boot/BCD", tmp_path / "BCD")
    assert hivexget(bcd, LOADER + "\\21000001", "Element") == hives.bcd_mbr_device(new, P2_START)
    assert hivexget(bcd, BOOTMGR + "\\11000001", "Element") == hives.bcd_mbr_device(new, P1_START)
    system = windisk.ntfs_file(
        disk, P2_START, 96 * MiB, "/Windows/System32/config/SYSTEM", tmp_path / "S"
    )
    assert hivexget(system, "\\MountedDevices", "\\DosDevices\\C:") == hives.mounted_device(
        new, P2_START
    )
    assert hivexget(system, "\\MountedDevices", "\\DosDevices\\E:") == hives.mounted_device(
        *windisk.OTHER_DISK
    )
    bak = windisk.ntfs_file(disk, P1_START, P1_SIZE, "/BOOTSECT.BAK", tmp_path / "bak")
    assert bak.read_bytes() == windisk.boot_sector_copy(P1_START)  # the partition did not move
    probe = json.loads(clonebay("probe", str(disk), "--json").stdout)
    serials = {p["number"]: p["volume"]["uuid"] for p in probe["partitions"]}
    result = json.loads(proc.stdout.splitlines()[-1])
    olds = {c["where"][:2]: c["before"] for c in result["changes"] if c["what"] == "filesystem id"}
    assert olds.keys() == {"p1", "p2"} and all(serials[int(k[1])] != v for k, v in olds.items())


def test_a_hive_with_a_pending_log_stops_the_pass_before_it_writes(
    disk: Path, tmp_path: Path
) -> None:
    config = "/Windows/System32/config/SYSTEM"
    system = windisk.ntfs_file(disk, P2_START, 96 * MiB, config, tmp_path / "SYSTEM")
    hives.set_sequence(system, 12, 11)
    dev = subprocess.run(
        [
            "losetup",
            "--find",
            "--show",
            "--offset",
            str(P2_START),
            "--sizelimit",
            str(96 * MiB),
            str(disk),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        subprocess.run(["ntfscp", "-f", dev, str(system), config], check=True, capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)
    before = system.read_bytes()
    proc = clonebay("fixup", str(disk), "--hostname", "OTHER", "--yes")
    assert proc.returncode == 10, proc.stderr
    assert "pending transaction log" in proc.stderr and "sequence 12 != 11" in proc.stderr
    assert "the post-copy pass on" in proc.stderr
    after = windisk.ntfs_file(disk, P2_START, 96 * MiB, config, tmp_path / "after")
    assert after.read_bytes() == before


def test_a_computer_name_windows_refuses_is_refused_before_any_write(disk: Path) -> None:
    from tests.edgedisks import sha256

    before = sha256(disk)
    proc = clonebay("fixup", str(disk), "--hostname", "a-name-of-20-chars-x", "--yes")
    assert proc.returncode == 10 and "15" in proc.stderr, proc.stderr
    assert "nothing was changed by the pass" in proc.stderr
    assert sha256(disk) == before


def test_probe_and_the_plan_show_windows_identity_without_writing(
    disk: Path, tmp_path: Path
) -> None:
    from tests.edgedisks import sha256

    before = sha256(disk)
    proc = clonebay("probe", str(disk), "--json")
    assert proc.returncode == 0, proc.stderr
    parts = {p["number"]: p for p in json.loads(proc.stdout)["partitions"]}
    assert parts[1]["windows"] is None  # the system partition holds no Windows
    assert parts[2]["windows"] == {
        "computer_name": "OLDPC",
        "generalized": False,
        "sysprep": parts[2]["windows"]["sysprep"],
        "machine_sid": "S-1-5-21-1111-2222-3333",
    }
    assert "IMAGE_STATE_COMPLETE" in parts[2]["windows"]["sysprep"]
    text = clonebay("probe", str(disk)).stdout
    assert "Windows on p2: computer name OLDPC, not generalized" in text
    target = tmp_path / "t.img"
    plan = clonebay("clone", str(disk), str(target), "--dry-run")
    assert "Windows on p2: OLDPC, NOT generalized (copies keep its SID)" in plan.stdout
    assert sha256(disk) == before and not target.exists()
