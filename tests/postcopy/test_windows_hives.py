"""The Windows post-copy edits on real hive files, checked with hivex's own tools (hivexget,
hivexregedit) as the oracle, never with our reader; expected bytes are built here with struct."""

from __future__ import annotations

import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest

from clonebay.engine.postcopy import hive, windows, windows_boot
from clonebay.errors import InputError, UsageError
from tests.postcopy import hives

pytestmark = pytest.mark.skipif(
    shutil.which("hivexsh") is None or shutil.which("hivexregedit") is None,
    reason="hivex tools missing (apt-get install libhivex-bin libwin-hivex-perl)",
)

MiB = 1 << 20
OLD_SIG, NEW_SIG, OTHER_SIG = 0x1234ABCD, 0x5EED0001, 0xDEADBEEF
P1, P2, P2_NEW = 1 * MiB, 101 * MiB, 201 * MiB  # system reserved (unmoved), C: (moved)
LOST = 300 * MiB  # a partition of the old disk that the move does not know


def hivexget(path: Path, key: str, name: str) -> bytes:
    """The raw value as hivex prints it (strings: UTF-8 and a newline; binary: as stored)."""
    return subprocess.run(
        ["hivexget", str(path), key, name], check=True, capture_output=True
    ).stdout


def export(path: Path, key: str) -> str:
    argv = ["hivexregedit", "--export", str(path), key]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


# --- computer name ----------------------------------------------------------------------------


@pytest.mark.parametrize("current", [1, 2])
def test_computer_name_set_in_all_four_places(tmp_path: Path, current: int) -> None:
    path = hives.system_hive(tmp_path / "SYSTEM", computer_name="OLDPC", current=current)
    other = f"\\ControlSet{3 - current:03d}"
    other_before = export(path, other)

    changes = windows.set_computer_name(path, "NewPc-07", "p2 (NTFS, Windows)")

    cs = f"\\ControlSet{current:03d}"
    name_keys = [
        "\\Control\\ComputerName\\ComputerName",
        "\\Control\\ComputerName\\ActiveComputerName",
    ]
    for key in name_keys:
        assert hivexget(path, cs + key, "ComputerName") == b"NEWPC-07\n"
    tcpip = cs + "\\Services\\Tcpip\\Parameters"
    assert hivexget(path, tcpip, "Hostname") == b"NewPc-07\n"
    assert hivexget(path, tcpip, "NV Hostname") == b"NewPc-07\n"
    assert hivexget(path, tcpip, "DataBasePath") == b"%SystemRoot%\\System32\\drivers\\etc\n"
    assert export(path, other) == other_before  # the other control set is untouched
    assert [(c.before, c.after, c.checked) for c in changes] == [
        ("OLDPC", "NEWPC-07", "read back"),
        ("OLDPC", "NEWPC-07", "read back"),
        ("oldpc", "NewPc-07", "read back"),
        ("oldpc", "NewPc-07", "read back"),
    ]
    assert not hive.pending_log(path)
    assert windows.set_computer_name(path, "NewPc-07", "p2") == []  # already so: no change


@pytest.mark.parametrize(
    "name", ["ACCOUNTING-PC-16", "bad_name", "with space", "12345", "-lead", "trail-", "", "Ünï"]
)
def test_bad_computer_name_refused_before_any_write(tmp_path: Path, name: str) -> None:
    path = hives.system_hive(tmp_path / "SYSTEM")
    before = path.read_bytes()
    with pytest.raises(UsageError, match="computer name"):
        windows.set_computer_name(path, name, "p2")
    assert path.read_bytes() == before


def test_fifteen_characters_and_digits_with_a_letter_accepted() -> None:
    for name in ("ACCOUNTING-PC-1", "a", "7-eleven", "PC01"):
        windows.validate_computer_name(name)


def test_pending_log_refused_and_hive_untouched(tmp_path: Path) -> None:
    path = hives.system_hive(tmp_path / "SYSTEM")
    assert not hive.pending_log(path)
    hives.set_sequence(path, 12, 11)
    before = path.read_bytes()
    assert hive.pending_log(path)
    with pytest.raises(InputError, match=r"pending transaction log \(sequence 12 != 11\)") as err:
        windows.set_computer_name(path, "NEWPC", "p2")
    assert str(path) in str(err.value)
    bcd = _bcd(tmp_path / "BCD")  # clean, but the move is refused before it is written
    bcd_before = bcd.read_bytes()
    with pytest.raises(InputError, match="sequence 12 != 11"):
        windows_boot.patch_mbr_boot(
            OLD_SIG, NEW_SIG, {P1: P1, P2: P2_NEW}, where="disk", bcd=bcd, system_hive=path
        )
    assert path.read_bytes() == before
    assert bcd.read_bytes() == bcd_before


def _damaged(tmp_path: Path, how: str) -> Path:
    path = hives.system_hive(tmp_path / "SYSTEM")
    data = bytearray(path.read_bytes())
    if how == "garbage":
        data = bytearray(b"\x17" * 8192)
    elif how == "truncated":
        data = data[:6000]
    elif how == "checksum":
        data[0x1FC] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("how", "words"),
    [("garbage", "not a registry hive"), ("truncated", "truncated"), ("checksum", "checksum")],
)
def test_not_a_hive_named_in_the_error(tmp_path: Path, how: str, words: str) -> None:
    path = _damaged(tmp_path, how)
    before = path.read_bytes()
    for call in (
        lambda: hive.pending_log(path),
        lambda: windows.current_control_set(path),
        lambda: windows.set_computer_name(path, "NEWPC", "p2"),
    ):
        with pytest.raises(InputError, match=words) as err:
            call()
        assert str(path) in str(err.value)
    assert path.read_bytes() == before


# --- sysprep state and SID --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_state", "generalization", "generalized"),
    [
        ("IMAGE_STATE_COMPLETE", 7, False),
        ("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE", 4, True),
        (None, 4, True),  # no ImageState: the SYSTEM value decides
        (None, None, None),
    ],
)
def test_sysprep_state_and_sid(
    tmp_path: Path, image_state: str | None, generalization: int | None, generalized: bool | None
) -> None:
    config = tmp_path / "WINDOWS" / "system32" / "Config"  # NTFS case, found case-insensitively
    config.mkdir(parents=True)
    hives.system_hive(
        config / "SYSTEM", computer_name="LAB-07", generalization_state=generalization
    )
    hives.software_hive(config / "software", image_state=image_state)
    hives.sam_hive(config / "SAM", (3_000_000_001, 42, 4_294_967_295))

    found = windows.windows_identity(tmp_path, "p2")

    assert found.sysprep.generalized is generalized
    assert found.sid == "S-1-5-21-3000000001-42-4294967295"
    (fact,) = found.facts()
    assert fact.startswith("Windows on p2: computer name LAB-07, ")
    assert fact.endswith("machine SID S-1-5-21-3000000001-42-4294967295")
    word = {True: ", generalized (", False: ", not generalized (", None: ", sysprep state unknown"}
    assert word[generalized] in fact
    if image_state:
        assert f"ImageState {image_state}" in fact
    warning = found.warning()
    assert bool(warning) is (generalized is not True)
    if warning:
        assert "S-1-5-21-3000000001-42-4294967295" in warning
        assert "Sysprep" in warning and "NewSID" in warning


def test_sid_missing_when_v_does_not_end_with_one(tmp_path: Path) -> None:
    path = hives.sam_hive(tmp_path / "SAM", (1, 2, 3))
    assert windows.machine_sid(path) == "S-1-5-21-1-2-3"
    hives.merge(
        path,
        "HKEY_LOCAL_MACHINE\\SAM",
        [hives.Key("SAM\\Domains\\Account", {"V": hives.reg_hex(3, b"\0" * 40)})],
    )
    assert windows.machine_sid(path) is None


# --- MBR moves --------------------------------------------------------------------------------

OS_ID = "{fde483f1-1482-11e2-90a1-00505698002c}"
RESUME_ID = "{fde483f0-1482-11e2-90a1-00505698002c}"
OTHER_ID = "{7409376c-f38e-11e1-bc89-00505698002c}"
GPT_PART, GPT_DISK, GPT_PART_NEW = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def _bcd(path: Path) -> Path:
    return hives.bcd_hive(
        path,
        [
            hives.BcdObject(
                hives.BOOTMGR_ID,
                hives.BOOTMGR_TYPE,
                {
                    "11000001": hives.bcd_mbr_device(OLD_SIG, P1),
                    "12000002": "\\bootmgr",
                    "12000004": "Windows Boot Manager",
                },
            ),
            hives.BcdObject(
                OS_ID,
                hives.OSLOADER_TYPE,
                {
                    "11000001": hives.bcd_mbr_device(OLD_SIG, P2),
                    "21000001": hives.bcd_mbr_device(OLD_SIG, P2),
                    "12000004": "Windows 10",
                },
            ),
            hives.BcdObject(
                RESUME_ID,
                0x10200004,
                {
                    "11000001": hives.bcd_mbr_device(OLD_SIG, LOST),
                    "21000001": hives.bcd_gpt_device(GPT_PART, GPT_DISK),
                },
            ),
            hives.BcdObject(
                OTHER_ID,
                hives.OSLOADER_TYPE,
                {
                    "11000001": hives.bcd_mbr_device(OTHER_SIG, P2),
                    "21000001": hives.bcd_mbr_device(OTHER_SIG, P2),
                },
            ),
        ],
    )


MOUNTED = {
    "\\DosDevices\\C:": hives.mounted_device(OLD_SIG, P2),
    "\\??\\Volume{aaaaaaaa-0000-11ee-8000-000000000001}": hives.mounted_device(OLD_SIG, P1),
    "\\??\\Volume{aaaaaaaa-0000-11ee-8000-000000000002}": hives.mounted_device(OLD_SIG, P2),
    "\\DosDevices\\D:": hives.mounted_device(OTHER_SIG, P2),
    "\\DosDevices\\F:": hives.mounted_device(OLD_SIG, LOST),
    "\\DosDevices\\E:": hives.gpt_mounted_device(GPT_PART),
    "\\??\\Volume{bbbbbbbb-0000-11ee-8000-000000000003}": hives.gpt_mounted_device(GPT_PART),
}


@pytest.mark.parametrize("new_signature", [OLD_SIG, NEW_SIG])
def test_mbr_move_patches_bcd_and_mounted_devices(tmp_path: Path, new_signature: int) -> None:
    bcd = _bcd(tmp_path / "BCD")
    system = hives.system_hive(tmp_path / "SYSTEM", mounted=MOUNTED)
    untouched_bcd = {
        (obj, el): hivexget(bcd, f"\\Objects\\{obj}\\Elements\\{el}", "Element")
        for obj, el in [
            (RESUME_ID, "11000001"),
            (RESUME_ID, "21000001"),
            (OTHER_ID, "11000001"),
            (OTHER_ID, "21000001"),
            (OS_ID, "12000004"),
            (hives.BOOTMGR_ID, "12000004"),
        ]
    }

    patch = windows_boot.patch_mbr_boot(
        OLD_SIG, new_signature, {P1: P1, P2: P2_NEW}, where="disk", bcd=bcd, system_hive=system
    )

    def element(obj: str, el: str) -> bytes:
        return hivexget(bcd, f"\\Objects\\{obj}\\Elements\\{el}", "Element")

    p1_sig = new_signature  # p1 did not move: only the signature can change
    assert element(hives.BOOTMGR_ID, "11000001") == hives.bcd_mbr_device(p1_sig, P1)
    for el in ("11000001", "21000001"):
        assert element(OS_ID, el) == hives.bcd_mbr_device(new_signature, P2_NEW)
    for (obj, el), data in untouched_bcd.items():
        assert element(obj, el) == data

    mounted = {name: hivexget(system, "\\MountedDevices", name) for name in MOUNTED}
    expected = dict(MOUNTED)
    expected["\\DosDevices\\C:"] = struct.pack("<IQ", new_signature, P2_NEW)
    expected["\\??\\Volume{aaaaaaaa-0000-11ee-8000-000000000002}"] = expected["\\DosDevices\\C:"]
    expected["\\??\\Volume{aaaaaaaa-0000-11ee-8000-000000000001}"] = struct.pack("<IQ", p1_sig, P1)
    assert mounted == expected

    texts = [c.text() for c in patch.changes]
    move = f"signature 0x1234abcd offset {P2} -> signature 0x{new_signature:08x} offset {P2_NEW}"
    assert f"disk: bcd-device {OS_ID} 21000001: {move}" in texts
    assert f"disk: mounted-device \\DosDevices\\C:: {move}" in texts
    assert len(patch.changes) == 4 + (2 if new_signature != OLD_SIG else 0)
    assert all(c.checked == "read back" for c in patch.changes)
    lost = f"signature 0x1234abcd offset {LOST} is no partition the move knows; left alone"
    assert f"bcd-device {RESUME_ID} 11000001: {lost}" in patch.facts
    assert f"mounted-device \\DosDevices\\F:: {lost}" in patch.facts
    assert not hive.pending_log(bcd) and not hive.pending_log(system)


def test_gpt_mounted_devices_follow_a_guid_map(tmp_path: Path) -> None:
    system = hives.system_hive(tmp_path / "SYSTEM", mounted=MOUNTED)
    windows_boot.patch_mbr_boot(
        OLD_SIG,
        OLD_SIG,
        {P1: P1, P2: P2},
        where="disk",
        system_hive=system,
        guids={GPT_PART: GPT_PART_NEW},
    )
    for name in ("\\DosDevices\\E:", "\\??\\Volume{bbbbbbbb-0000-11ee-8000-000000000003}"):
        assert hivexget(system, "\\MountedDevices", name) == b"DMIO:ID:" + GPT_PART_NEW.bytes_le
    c_drive = hivexget(system, "\\MountedDevices", "\\DosDevices\\C:")
    assert c_drive == MOUNTED["\\DosDevices\\C:"]


def _boot_sector(oem: bytes, hidden: int) -> bytes:
    sector = bytearray(512)
    sector[0:3] = b"\xeb\x52\x90"
    sector[3:11] = oem
    struct.pack_into("<HB", sector, 0x0B, 512, 8)
    struct.pack_into("<I", sector, 0x1C, hidden)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector) + b"\xcc" * 7680  # the rest of an 8 KiB $Boot copy


def test_bootsect_bak_patched(tmp_path: Path) -> None:
    ntfs = _boot_sector(b"NTFS    ", P2 // 512)
    (tmp_path / "BOOTSECT.BAK").write_bytes(ntfs)
    elsewhere = _boot_sector(b"NTFS    ", LOST // 512)
    (tmp_path / "bootsect.dat").write_bytes(elsewhere)
    grub = b"\xeb\x63\x90\x10\x8e\xd0\xbc\x00" + b"\0" * 20 + struct.pack("<I", P2 // 512)
    grub = grub.ljust(510, b"\0") + b"\x55\xaa"  # GRUB's boot.img: no BPB, no OEM id
    (tmp_path / "bootsect.lnx").write_bytes(grub)

    patch = windows_boot.patch_mbr_boot(
        OLD_SIG, NEW_SIG, {P1: P1, P2: P2_NEW}, where="p1", volume_roots=[tmp_path]
    )

    expected = bytearray(ntfs)
    expected[0x1C:0x20] = (P2_NEW // 512).to_bytes(4, "little")
    assert (tmp_path / "BOOTSECT.BAK").read_bytes() == bytes(expected)
    assert (tmp_path / "bootsect.dat").read_bytes() == elsewhere
    assert (tmp_path / "bootsect.lnx").read_bytes() == grub
    (change,) = patch.changes
    assert (
        change.text() == f"p1: boot-sector-copy BOOTSECT.BAK: hidden sectors {P2 // 512} ->"
        f" hidden sectors {P2_NEW // 512}"
    )


def test_gpt_bcd_devices_follow_a_guid_map(tmp_path: Path) -> None:
    bcd = _bcd(tmp_path / "BCD")
    disk_new = uuid.uuid4()
    before = hivexget(bcd, f"\\Objects\\{OS_ID}\\Elements\\21000001", "Element")

    patch = windows_boot.patch_mbr_boot(
        OLD_SIG,
        OLD_SIG,
        {P1: P1, P2: P2},
        where="disk",
        bcd=bcd,
        guids={GPT_PART: GPT_PART_NEW, GPT_DISK: disk_new},
    )

    element = hivexget(bcd, f"\\Objects\\{RESUME_ID}\\Elements\\21000001", "Element")
    assert element == hives.bcd_gpt_device(GPT_PART_NEW, disk_new)
    assert hivexget(bcd, f"\\Objects\\{OS_ID}\\Elements\\21000001", "Element") == before
    (change,) = patch.changes
    assert change.before == f"partition {GPT_PART} disk {GPT_DISK}"
    assert change.after == f"partition {GPT_PART_NEW} disk {disk_new}"
