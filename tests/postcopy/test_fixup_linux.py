"""The post-copy pass on a small installed-looking disk (tests/postcopy/minidisk.py), from the
command line: each edit checked with another tool than clonebay's own (debugfs reads the ext4,
mtools the ESP, ssh-keygen the keys, e2fsck and fsck.fat the filesystems), and the hostile
cases refused before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.edgedisks import clonebay, sha256
from tests.postcopy import minidisk
from tests.postcopy.minidisk import MiniDisk

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root")


@pytest.fixture
def disk(tmp_path: Path) -> MiniDisk:
    return minidisk.build(tmp_path / "disk.img", tmp_path / "work")


def root_file(disk: Path, rel: str) -> str:
    return minidisk.read_root_file(disk, rel)


def root_exists(disk: Path, rel: str) -> bool:
    part = minidisk._root_image(disk)
    out = subprocess.run(
        ["debugfs", "-R", f"stat /{rel}", part], capture_output=True, text=True, check=False
    )
    return "Inode:" in out.stdout


def fsck_clean(disk: Path) -> None:
    part = minidisk._root_image(disk)
    proc = subprocess.run(["e2fsck", "-fn", part], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def fingerprint_of(disk: Path, kind: str, tmp: Path) -> str:
    pub = tmp / f"{kind}.pub"
    pub.write_text(root_file(disk, f"etc/ssh/ssh_host_{kind}_key.pub"))
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()[1]


def test_new_hostname_renews_the_linux_identity(disk: MiniDisk, tmp_path: Path) -> None:
    old_keys = {k: fingerprint_of(disk.path, k, tmp_path) for k in ("rsa", "ed25519")}
    proc = clonebay("fixup", str(disk.path), "--hostname", "lab-pc-07", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["hostname"] == "lab-pc-07"
    whats = {c["what"] for c in result["changes"]}
    assert {"hostname", "/etc/hosts", "machine-id", "persistent net rules"} <= whats
    assert root_file(disk.path, "etc/hostname") == "lab-pc-07\n"
    hosts = root_file(disk.path, "etc/hosts")
    assert "127.0.1.1\tlab-pc-07" in hosts and "source-host" not in hosts
    assert "127.0.0.1\tlocalhost" in hosts  # the other lines are kept
    assert root_file(disk.path, "etc/machine-id") == ""
    assert not root_exists(disk.path, "var/lib/dbus/machine-id")
    assert not root_exists(disk.path, "etc/udev/rules.d/70-persistent-net.rules")
    for kind, old in old_keys.items():
        new = fingerprint_of(disk.path, kind, tmp_path)
        assert new != old
        assert f"SHA256:{new.removeprefix('SHA256:')}" in {
            c["after"] for c in result["changes"] if c["what"] == f"ssh host key ({kind})"
        }
        assert "root@lab-pc-07" in root_file(disk.path, f"etc/ssh/ssh_host_{kind}_key.pub")
    fsck_clean(disk.path)


def test_default_pass_adds_only_the_fallback_loader(disk: MiniDisk) -> None:
    proc = clonebay("fixup", str(disk.path), "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert [c["what"] for c in result["changes"]] == ["efi fallback file", "efi fallback loader"]
    assert minidisk.esp_file(disk.path, "EFI/BOOT/BOOTX64.EFI") == minidisk.FAKE_GRUB
    assert minidisk.esp_file(disk.path, "EFI/BOOT/grub.cfg") == minidisk.esp_file(
        disk.path, "EFI/debian/grub.cfg"
    )
    assert root_file(disk.path, "etc/hostname") == "source-host\n"
    assert root_file(disk.path, "etc/machine-id").strip() == disk.machine_id
    minidisk.esp_fsck_clean(disk.path)
    # A second pass finds the loader there and keeps it.
    again = clonebay("fixup", str(disk.path), "--yes", "--json")
    skipped = json.loads(again.stdout.splitlines()[-1])["skipped"]
    assert any("already there (kept)" in s["why"] for s in skipped)


def test_an_existing_fallback_loader_is_kept(disk: MiniDisk, tmp_path: Path) -> None:
    other = tmp_path / "other.efi"
    other.write_bytes(b"MZ-some-other-loader")
    subprocess.run(["mmd", "-i", f"{disk.path}@@{minidisk.ESP_START}", "::/EFI/BOOT"], check=True)
    subprocess.run(
        [
            "mcopy",
            "-i",
            f"{disk.path}@@{minidisk.ESP_START}",
            str(other),
            "::/EFI/BOOT/bootx64.efi",
        ],
        check=True,
    )
    proc = clonebay("fixup", str(disk.path), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "already there (kept)" in proc.stdout
    assert minidisk.esp_file(disk.path, "EFI/BOOT/BOOTX64.EFI") == other.read_bytes()


def test_new_ids_follow_into_every_file(disk: MiniDisk) -> None:
    proc = clonebay("fixup", str(disk.path), "--new-ids", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    probe = json.loads(clonebay("probe", str(disk.path), "--json").stdout)
    uuids = {p["number"]: p["volume"]["uuid"] for p in probe["partitions"]}
    assert uuids[2] != disk.root_uuid and uuids[3] != disk.swap_uuid
    assert uuids[1] != disk.esp_serial
    blkid = subprocess.run(
        [
            "blkid",
            "-p",
            "-o",
            "value",
            "-s",
            "UUID",
            "--offset",
            str(minidisk.ROOT_START),
            str(disk.path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert blkid.stdout.strip() == uuids[2]  # util-linux's reading agrees with the probe
    fstab = root_file(disk.path, "etc/fstab")
    assert f"UUID={uuids[2]} /" in fstab and f"UUID={uuids[1]} /boot/efi" in fstab
    assert f"UUID={uuids[3]} none swap" in fstab
    assert root_file(disk.path, "etc/initramfs-tools/conf.d/resume") == f"RESUME=UUID={uuids[3]}\n"
    grub_cfg = root_file(disk.path, "boot/grub/grub.cfg")
    assert disk.root_uuid not in grub_cfg and f"root=UUID={uuids[2]}" in grub_cfg
    esp_cfg = minidisk.esp_file(disk.path, "EFI/debian/grub.cfg") or b""
    assert f"search.fs_uuid {uuids[2]} root".encode() in esp_cfg
    assert probe["disk_id"] != result["changes"][0]["before"]
    fsck_clean(disk.path)
    minidisk.esp_fsck_clean(disk.path)


def test_a_bad_hostname_is_refused_before_any_write(disk: MiniDisk) -> None:
    before = sha256(disk.path)
    for name in ("-lead", "has space", "x" * 64, "1234", "a_b"):
        proc = clonebay("fixup", str(disk.path), f"--hostname={name}", "--yes")
        assert proc.returncode == 2, (name, proc.stderr)
        assert "is not a host name" in proc.stderr
    assert sha256(disk.path) == before


def test_a_link_out_of_the_target_is_never_written_through(disk: MiniDisk, tmp_path: Path) -> None:
    """A hostile disk whose /etc/hostname is a link to an absolute path: followed from the
    mounted target, it would name a file of the machine running the pass."""
    bait = tmp_path / "bait"
    bait.write_text("host file\n")
    part = minidisk._root_image(disk.path)
    subprocess.run(
        ["debugfs", "-w", "-R", "rm /etc/hostname", part], check=True, capture_output=True
    )
    subprocess.run(
        ["debugfs", "-w", "-R", f"symlink /etc/hostname {bait}", part],
        check=True,
        capture_output=True,
    )
    minidisk.put_root_image(disk.path, Path(part))
    proc = clonebay("fixup", str(disk.path), "--hostname", "evil", "--yes")
    assert proc.returncode == 10, proc.stderr
    assert "symbolic link" in proc.stderr and "/etc/hostname" in proc.stderr
    assert "the post-copy pass on" in proc.stderr
    assert bait.read_text() == "host file\n"


def test_a_dirty_root_is_left_alone(disk: MiniDisk) -> None:
    part = Path(minidisk._root_image(disk.path))
    # needs_recovery set, as after a crash with a journal to replay
    subprocess.run(
        ["debugfs", "-w", "-R", "feature needs_recovery", str(part)],
        check=True,
        capture_output=True,
    )
    minidisk.put_root_image(disk.path, part)
    before = minidisk._root_image(disk.path)
    digest = sha256(before)
    proc = clonebay("fixup", str(disk.path), "--hostname", "other", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert not [c for c in result["changes"] if c["where"].startswith("p2")]
    assert any(s["where"].startswith("p2") and "journal" in s["why"] for s in result["skipped"])
    assert sha256(minidisk._root_image(disk.path)) == digest


def test_clone_with_a_hostname_leaves_the_source_alone(disk: MiniDisk, tmp_path: Path) -> None:
    before = sha256(disk.path)
    target = tmp_path / "target.img"
    proc = clonebay("clone", str(disk.path), str(target), "--hostname", "clone-01", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert (
        "after the copy: p2" in proc.stdout and "hostname: source-host -> clone-01" in proc.stdout
    )
    assert sha256(disk.path) == before
    assert root_file(target, "etc/hostname") == "clone-01\n"
    assert root_file(disk.path, "etc/hostname") == "source-host\n"
    assert minidisk.esp_file(target, "EFI/BOOT/BOOTX64.EFI") == minidisk.FAKE_GRUB
    assert minidisk.esp_file(disk.path, "EFI/BOOT/BOOTX64.EFI") is None


def test_a_full_esp_gets_no_half_fallback(disk: MiniDisk, tmp_path: Path) -> None:
    """An ESP without room for the loader and its grub.cfg: nothing is copied (a fallback
    path without its companions would not boot), the pass says why, and the ESP is clean."""
    image = f"{disk.path}@@{minidisk.ESP_START}"
    out = subprocess.run(["mdir", "-i", image, "::/"], capture_output=True, text=True, check=True)
    free = int(out.stdout.split("bytes free")[0].split("\n")[-1].replace(" ", ""))
    filler = tmp_path / "filler"
    filler.write_bytes(b"\0" * (free - 1024))
    subprocess.run(["mcopy", "-i", image, str(filler), "::/filler"], check=True)
    proc = clonebay("fixup", str(disk.path), "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["changes"] == []
    assert any("bytes free" in s["why"] for s in result["skipped"]), result["skipped"]
    assert minidisk.esp_file(disk.path, "EFI/BOOT/BOOTX64.EFI") is None
    assert minidisk.esp_file(disk.path, "EFI/BOOT/grub.cfg") is None
    minidisk.esp_fsck_clean(disk.path)


def test_on_a_block_device_and_refused_while_a_partition_is_mounted(
    disk: MiniDisk, tmp_path: Path
) -> None:
    """fixup on a real block device (a loop device over the disk): refused while one of its
    partitions is mounted (nothing written), done once it is not."""
    dev = subprocess.run(
        ["losetup", "--find", "--show", "--partscan", str(disk.path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(["partx", "-a", dev], capture_output=True, check=False)
    where = tmp_path / "mnt"
    where.mkdir()
    try:
        subprocess.run(["mount", "-o", "ro", f"{dev}p2", str(where)], check=True)
        try:
            before = sha256(disk.path)
            proc = clonebay("fixup", dev, "--hostname", "busy-one", "--yes")
            assert proc.returncode == 6, proc.stderr
            assert "mounted" in proc.stderr
            assert sha256(disk.path) == before
        finally:
            subprocess.run(["umount", str(where)], check=True)
        proc = clonebay("fixup", dev, "--hostname", "free-one", "--yes")
        assert proc.returncode == 0, proc.stderr
    finally:
        subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", dev], check=False)
    assert root_file(disk.path, "etc/hostname") == "free-one\n"


def test_a_name_for_a_disk_without_a_system_is_said_to_go_nowhere(tmp_path: Path) -> None:
    data = tmp_path / "data.img"
    data.write_bytes(os.urandom(4 << 20))
    proc = clonebay("fixup", str(data), "--hostname", "nobody", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "no Linux or Windows system was found" in proc.stdout


def test_os_prober_is_kept_quiet_while_grub_cfg_is_made(tmp_path: Path) -> None:
    """The target's os-prober would mount every disk of the machine (the source too): during
    update-grub it is the target's own true, and afterwards itself again."""
    from clonebay.engine.postcopy.chroot import Chroot
    from clonebay.engine.postcopy.grub import no_os_prober

    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    marker = tmp_path / "probed"
    prober = root / "usr/bin/os-prober"
    prober.write_text(f"#!/bin/sh\ntouch {marker}\n")
    prober.chmod(0o755)
    true = root / "usr/bin/true"
    true.write_bytes(Path("/bin/true").read_bytes())
    true.chmod(0o755)
    with no_os_prober(Chroot(root, "/dev/null", {})):
        subprocess.run([str(prober)], check=True)
        assert not marker.exists()
    subprocess.run([str(prober)], check=True)
    assert marker.exists()


def test_a_bad_mapping_file_is_refused_before_the_copy(disk: MiniDisk, tmp_path: Path) -> None:
    mapping = tmp_path / "machines.csv"
    mapping.write_text("mac,hostname\n52:54:00:00:00:01,a\n52-54-00-00-00-01,b\n")
    target = tmp_path / "target.img"
    proc = clonebay("clone", str(disk.path), str(target), "--map", str(mapping), "--yes")
    assert proc.returncode == 5, proc.stderr
    assert "both have mac 52:54:00:00:00:01" in proc.stderr
    assert not target.exists()
