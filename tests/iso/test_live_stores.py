"""Image stores from the live system, with the kernel's own SMB and NFS clients and the USB stick
it booted from: one guest (SeaBIOS, booted from a stick made by make-stick, tests/iso/
live_stick.py) on QEMU's user-mode network inside the NAS's network namespace (tests/iso/nas.py:
Samba and NFS-Ganesha at 10.0.2.2), checked in order:

- the stick: booted under SeaBIOS, the live medium, its images partition found by label and read
  by the live kernel's exFAT driver;
- SMB with a user: save, verify, ls and restore through smb:// URLs; the host then verifies the
  image on the share's disk and restores it, and every file matches the disk factory's record;
  a wrong password, a missing share, the guest share, a full share (refused before, and stopped
  cleanly during a save), an SMB1-only NAS (refused naming the dialects tried; --smb1 works);
- NFS: v4 round trip, a v3-only server (the fallback), an export that is not there;
- that stick's exFAT images partition, written while the system runs from the same stick (the
  live kernel's driver): listed by ``clonebay stores`` with its free space, a save into it by
  label, and in the TUI on the serial console: Save, the source, "Where are the images?"
  offering the stick first, the proposed name, Start; the image is then verified from the
  command line;
- the SMB server killed in the middle of a save: an error, not a hang, naming what is incomplete.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.system.stick import IMAGES_LABEL
from clonebay.testdisks import disks
from tests.diskcheck import assert_disk_matches
from tests.iso.conftest import blank
from tests.iso.live_stick import offers_its_images_partition
from tests.iso.nas import GUEST_HOST, PASSWORD, USER, Nas
from tests.iso.qemu import Disk, Guest
from tests.iso.serial_tui import SerialScreen

MIB = 1 << 20
BOOT_TIMEOUT = 600
JOB = 900  # a guard against a hang under TCG, never a measurement
SMB = f"smb://{USER}@{GUEST_HOST}"
PW = f"CLONEBAY_PASSWORD='{PASSWORD}'"


@pytest.fixture(scope="module")
def nas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nas]:
    for tool in ("smbd", "ganesha.nfsd", "rpcbind"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode:
            pytest.skip(f"{tool} is missing: make apt installs samba, nfs-ganesha and rpcbind")
    server = Nas(tmp_path_factory.mktemp("nas"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def guest(
    iso_disks: dict[str, disks.BuiltDisk],
    nas: Nas,
    live_stick: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Guest]:
    work = tmp_path_factory.mktemp("stores-guest")
    gpt = iso_disks["gpt"]
    vm = Guest(
        workdir=work,
        iso=live_stick,
        boot="usb",
        live_writable=True,  # its images partition is a store
        disks=[
            Disk(gpt.path, "virtio", "SRC-GPT", readonly=True),
            Disk(blank(work / "dst.img", gpt.size), "sata", "DST-SATA"),
        ],
        netns=nas.namespace,
        network=True,
    )
    vm.start()
    try:
        vm.wait_event("boot-ready", BOOT_TIMEOUT)
        vm.shell(BOOT_TIMEOUT)
        vm.check(
            "for i in $(seq 120); do ip route | grep -q '^default' && break; sleep 1; done;"
            " ip route | grep '^default'",
            timeout=180,
        )
        yield vm
    finally:
        vm.close()


def _paths(vm: Guest) -> dict[str, str]:
    listing = json.loads(vm.check("clonebay list --json"))
    return {str(d["serial"]): str(d["path"]) for d in listing if d.get("serial")}


def _host_restore_matches(image: Path, built: disks.BuiltDisk, work: Path) -> None:
    """The host reads the image the guest wrote through the share, and restores it."""
    assert cli.main(["verify", str(image)]) == 0
    target = blank(work / "host-restore.img", built.size)
    assert cli.main(["restore", "--yes", str(image), str(target)]) == 0
    assert_disk_matches(target, built, work)


def test_the_stick_boots_under_bios_and_offers_its_images_partition(guest: Guest) -> None:
    assert guest.run("test -d /sys/firmware/efi")[0] != 0
    offers_its_images_partition(guest)


def test_smb_round_trip(
    guest: Guest, nas: Nas, iso_disks: dict[str, disks.BuiltDisk], tmp_path: Path
) -> None:
    disk = _paths(guest)
    url = f"{SMB}/images/live/g.image"
    out = guest.check(f"{PW} clonebay save {disk['SRC-GPT']} {url}", timeout=JOB)
    assert "read back from the store: OK" in out and url in out, out
    assert "/run/clonebay/stores" not in guest.check("cat /proc/mounts")
    _host_restore_matches(nas.images / "live" / "g.image", iso_disks["gpt"], tmp_path)
    ext = next(p for p in iso_disks["gpt"].partitions if p.fstype == "ext4")
    assert guest.check(f"{PW} clonebay ls {url}:p{ext.number} /", timeout=JOB)
    guest.check(f"{PW} clonebay restore --yes --verify {url} {disk['DST-SATA']}", timeout=JOB)


def test_smb_refusals_are_plain(guest: Guest, nas: Nas) -> None:
    disk = _paths(guest)
    code, out = guest.run(
        f"CLONEBAY_PASSWORD=wrong clonebay save {disk['SRC-GPT']} {SMB}/images/x.image", JOB
    )
    assert code == 12 and "refused the user name or password" in out, out
    code, out = guest.run(f"{PW} clonebay verify {SMB}/nosuchshare/x.image", JOB)
    assert code == 12 and "share does not exist" in out, out
    out = guest.check(
        f"clonebay save {disk['SRC-GPT']} smb://{GUEST_HOST}/public/anon.image", timeout=JOB
    )
    assert "read back from the store: OK" in out, out
    assert (nas.public / "anon.image" / "manifest.json").is_file()


def test_a_full_share_is_refused_before_and_stopped_cleanly_during_a_save(
    guest: Guest, nas: Nas
) -> None:
    disk = _paths(guest)
    url = f"{SMB}/small/f.image"
    code, out = guest.run(f"{PW} clonebay save {disk['SRC-GPT']} {url}", JOB)
    assert code == 13 and "nothing was written" in out, out
    code, out = guest.run(f"{PW} clonebay save --no-space-check {disk['SRC-GPT']} {url}", JOB)
    assert code == 13 and "the store is full" in out and "was removed" in out, out
    listing = subprocess.run(
        ["ip", "netns", "exec", nas.namespace, "smbclient", "//127.0.0.1/small",
         "-U", f"{USER}%{PASSWORD}", "-c", "ls"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "f.image" not in listing.stdout, listing.stdout


def test_an_smb1_only_nas_is_named_and_reached_with_smb1(guest: Guest, nas: Nas) -> None:
    disk = _paths(guest)
    nas.restart_smb("NT1", "NT1")
    try:
        code, out = guest.run(f"{PW} clonebay save {disk['SRC-GPT']} {SMB}/images/old.image", JOB)
        assert code == 12 and "dialect" in out and "--smb1" in out, out
        out = guest.check(
            f"{PW} clonebay save --smb1 {disk['SRC-GPT']} {SMB}/images/old.image", timeout=JOB
        )
        assert "read back from the store: OK" in out, out
    finally:
        nas.restart_smb("SMB2_10", "SMB3_11")


def test_nfs_v4_round_trip_and_a_missing_export(
    guest: Guest, nas: Nas, iso_disks: dict[str, disks.BuiltDisk], tmp_path: Path
) -> None:
    disk = _paths(guest)
    url = f"nfs://{GUEST_HOST}/images/n4.image"
    out = guest.check(f"clonebay save {disk['SRC-GPT']} {url}", timeout=JOB)
    assert "read back from the store: OK" in out, out
    _host_restore_matches(nas.nfs_export / "n4.image", iso_disks["gpt"], tmp_path)
    assert "OK" in guest.check(f"clonebay verify {url}", timeout=JOB)
    ext = next(p for p in iso_disks["gpt"].partitions if p.fstype == "ext4")
    assert guest.check(f"clonebay ls {url}:p{ext.number} /", timeout=JOB)
    guest.check(f"clonebay restore --yes --verify {url} {disk['DST-SATA']}", timeout=JOB)
    code, out = guest.run(f"clonebay verify nfs://{GUEST_HOST}/nope/x.image", JOB)
    assert code == 12 and "not there or not exported" in out, out


def test_nfs_v3_only_server_is_reached_by_the_fallback(guest: Guest, nas: Nas) -> None:
    disk = _paths(guest)
    nas.restart_nfs("3")
    try:
        out = guest.check(
            f"clonebay save {disk['SRC-GPT']} nfs://{GUEST_HOST}{nas.nfs_export}/n3.image",
            timeout=JOB,
        )
        assert "read back from the store: OK" in out, out
        assert (nas.nfs_export / "n3.image" / "manifest.json").is_file()
    finally:
        nas.restart_nfs("3, 4")


def test_a_usb_stick_with_exfat_is_a_store(guest: Guest) -> None:
    disk = _paths(guest)
    listed = json.loads(guest.check("clonebay stores --json", timeout=JOB))["stores"]
    stick = [s for s in listed if s["label"] == IMAGES_LABEL]
    assert len(stick) == 1 and stick[0]["usable"] and stick[0]["fstype"] == "exfat", listed
    assert stick[0]["free"] > 900 * MIB
    url = f"disk:LABEL={IMAGES_LABEL}/u.image"
    out = guest.check(f"clonebay save {disk['SRC-GPT']} {url}", timeout=JOB)
    assert "read back from the store: OK" in out, out
    listed = json.loads(guest.check("clonebay stores --json", timeout=JOB))["stores"]
    assert "u.image" in next(s for s in listed if s["label"] == IMAGES_LABEL)["images"]


def test_the_server_killed_during_a_save_is_an_error_not_a_hang(guest: Guest, nas: Nas) -> None:
    disk = _paths(guest)
    packs = nas.images / "killed" / "k.image" / "packs"
    stop = threading.Event()

    def kill_when_writing() -> None:
        while not stop.is_set():
            if packs.is_dir() and any(packs.iterdir()):
                nas.kill("smbd")
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_writing)
    killer.start()
    try:
        started = time.monotonic()
        code, out = guest.run(
            f"{PW} clonebay save --pack-limit 8 {disk['SRC-GPT']} {SMB}/images/killed/k.image",
            JOB,
        )
        took = time.monotonic() - started
    finally:
        stop.set()
        killer.join()
        nas.restart_smb("SMB2_10", "SMB3_11")
    print(f"save with the server killed ended after {took:.0f} s (exit {code})")
    assert code not in (0, 9), out
    assert "incomplete" in out or "stopped" in out, out
    assert not (nas.images / "killed" / "k.image" / "manifest.json").exists()


def test_the_tui_saves_into_the_sticks_images_partition(guest: Guest) -> None:
    pyte = pytest.importorskip("pyte", reason="pyte (a terminal emulator) reads the TUI's screen")
    disk = _paths(guest)
    guest.run("clear")
    tui = SerialScreen(guest, pyte)
    guest.send("stty rows 30 cols 100; TERM=xterm-256color clonebay; echo __RC_$?__\n")
    tui.wait_for("Clone disk", "Save image", timeout=300)
    tui.key("s")
    picker = tui.wait_for("SRC-GPT", timeout=120)
    rows = [ln for ln in picker.splitlines() if "/dev/" in ln]
    index = next(i for i, ln in enumerate(rows) if "SRC-GPT" in ln)
    for _ in range(index):
        tui.key("\x1b[B")  # down
    tui.key("\r")
    tui.wait_for("Where are the images?", IMAGES_LABEL, timeout=300)
    tui.key("\r")  # the stick's images partition is first, under the cursor
    named = tui.wait_for(".image", timeout=120)
    tui.key("\r")  # the proposed name
    tui.wait_for("Start", timeout=300)
    time.sleep(5)  # the plan is read in a worker: Start is enabled when it is shown
    tui.key("\r")
    done = tui.wait_for("Back to the menu", timeout=JOB)
    assert "✔" in done, done
    tui.key("\x11")  # ctrl+q, then "Quit" (Tab) in the question
    tui.wait_for("Leave clonebay?", timeout=60)
    tui.key("\t", pause=2)
    tui.key("\r")
    guest.wait_output(rb"__RC_(\d+)__", 120, tui.start)
    guest.run("stty sane -echo cols 200 rows 50; clear")
    listed = json.loads(guest.check("clonebay stores --json", timeout=JOB))["stores"]
    images = next(s for s in listed if s["label"] == IMAGES_LABEL)["images"]
    new = [name for name in images if name != "u.image"]
    assert len(new) == 1, (images, named)
    out = guest.check(f"clonebay verify disk:LABEL={IMAGES_LABEL}/{new[0]}", timeout=JOB)
    assert "OK" in out, out
    del disk
