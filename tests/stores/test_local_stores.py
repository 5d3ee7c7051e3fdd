"""Disk stores: a QUICK disk saved into a store partition of each filesystem (ext4, NTFS, FAT32,
exFAT) named by its label, then verified, listed and restored from there; the store is
unmounted after every command and its filesystem is clean; ``clonebay stores`` lists it with
the image. The guard: a store on the job's own disks, and an EFI partition, are refused before
anything is written."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from clonebay.system import loopdev
from clonebay.testdisks import disks
from clonebay.testdisks.files import sparse_file
from tests.diskcheck import assert_disk_matches, sha256_range
from tests.stores.cli import clonebay
from tests.stores.conftest import MIB, StoreVolume, fsck_clean, make_volume, store_mounts


@pytest.mark.parametrize("fstype", ["ext4", "ntfs", "vfat", "exfat"])
def test_save_verify_ls_restore_through_a_store_partition(
    fstype: str,
    volumes: dict[str, StoreVolume],
    quick_disk: disks.BuiltDisk,
    tmp_path: Path,
) -> None:
    volume = volumes[fstype]
    url = volume.url(f"images/{fstype}/quick.image")
    source_hash = sha256_range(quick_disk.path, 0, quick_disk.size)

    saved = clonebay("save", "--pack-limit", "16", str(quick_disk.path), url)
    assert saved.returncode == 0, saved.stderr
    assert url in saved.stdout and "/run/clonebay/stores" not in saved.stdout, saved.stdout
    assert store_mounts() == [], "the store stayed mounted after save"
    assert sha256_range(quick_disk.path, 0, quick_disk.size) == source_hash

    checked = clonebay("verify", url)
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stdout + checked.stderr
    ext = next(p for p in quick_disk.partitions if p.fstype == "ext4")
    listed = clonebay("ls", f"{url}:p{ext.number}", "/")
    assert listed.returncode == 0, listed.stderr
    ext_tree = ext.tree
    assert ext_tree is not None
    top = {p.split("/", 1)[0] for p in ext_tree.files}
    assert top & set(listed.stdout.split()), listed.stdout

    target = sparse_file(tmp_path / "target.img", quick_disk.size)
    restored = clonebay("restore", "--yes", "--verify", url, str(target))
    assert restored.returncode == 0, restored.stderr
    assert_disk_matches(target, quick_disk, tmp_path)
    assert store_mounts() == []
    fsck_clean(volume)


def test_stores_lists_every_store_partition_with_its_images(
    volumes: dict[str, StoreVolume], quick_disk: disks.BuiltDisk
) -> None:
    volume = volumes["ext4"]
    saved = clonebay("save", str(quick_disk.path), volume.url("listed/one.image"))
    assert saved.returncode == 0, saved.stderr
    out = clonebay("stores", "--json")
    assert out.returncode == 0, out.stderr
    found = {s["device"]: s for s in json.loads(out.stdout)["stores"]}
    for v in volumes.values():
        assert v.device in found, f"{v.device} ({v.fstype}) not listed: {sorted(found)}"
        entry = found[v.device]
        assert entry["label"] == v.label and entry["usable"], entry
        assert 0 < entry["free"] <= 1024 * MIB
    assert "listed/one.image" in found[volume.device]["images"]
    statvfs = _free_now(volume)
    assert abs(found[volume.device]["free"] - statvfs) <= 4 * MIB
    assert store_mounts() == []


def _free_now(volume: StoreVolume) -> int:
    where = Path(f"/tmp/cbs-free-{os.getpid()}")
    where.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", "ro", volume.device, str(where)], check=True)
    try:
        info = os.statvfs(where)
        return info.f_bavail * info.f_frsize
    finally:
        subprocess.run(["umount", str(where)], check=True)
        where.rmdir()


def test_an_already_mounted_store_is_used_where_it_is_and_left_mounted(
    volumes: dict[str, StoreVolume], quick_disk: disks.BuiltDisk, tmp_path: Path
) -> None:
    volume = volumes["ext4"]
    where = tmp_path / "mnt"
    where.mkdir()
    subprocess.run(["mount", volume.device, str(where)], check=True)
    try:
        saved = clonebay("save", str(quick_disk.path), f"disk:{volume.device}/mounted/q.image")
        assert saved.returncode == 0, saved.stderr
        assert (where / "mounted" / "q.image" / "manifest.json").is_file()
        assert os.path.ismount(where)
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.fixture
def partitioned(tmp_path: Path) -> tuple[str, str]:
    """A 256 MiB disk on a loop device whose one partition holds an ext4 store."""
    path = sparse_file(tmp_path / "withstore.img", 256 * MIB)
    subprocess.run(["sgdisk", "-n", "1:1M:0", "-c", "1:store", str(path)], check=True,
                   capture_output=True)  # fmt: skip
    dev = loopdev.attach(str(path), partitions=True)
    part = dev + "p1"
    subprocess.run(["mkfs.ext4", "-q", "-L", "CBSONDISK", part], check=True)
    yield dev, part
    loopdev.detach(dev, partitions=True)


def test_a_store_on_the_restore_target_disk_is_refused_before_anything_is_written(
    partitioned: tuple[str, str], quick_disk: disks.BuiltDisk, tmp_path: Path
) -> None:
    dev, part = partitioned
    saved = clonebay("save", str(quick_disk.path), f"disk:{part}/q.image")
    assert saved.returncode == 0, saved.stderr
    before = sha256_range(Path(dev), 0, 256 * MIB)
    out = clonebay("restore", "--yes", f"disk:{part}/q.image", dev)
    assert out.returncode == 6, out.stdout + out.stderr
    assert "the job reads or writes" in out.stderr and "nothing was written" in out.stderr
    assert sha256_range(Path(dev), 0, 256 * MIB) == before
    assert store_mounts() == []


def test_a_store_on_the_source_disk_is_refused(
    partitioned: tuple[str, str], tmp_path: Path
) -> None:
    dev, part = partitioned
    out = clonebay("save", dev, f"disk:{part}/self.image")
    assert out.returncode == 6, out.stdout + out.stderr
    assert "lies on" in out.stderr and dev in out.stderr


def test_an_efi_system_partition_is_not_a_store(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "esp.img", 128 * MIB)
    subprocess.run(["sgdisk", "-n", "1:1M:0", "-t", "1:ef00", str(path)], check=True,
                   capture_output=True)  # fmt: skip
    dev = loopdev.attach(str(path), partitions=True)
    try:
        subprocess.run(["mkfs.vfat", "-F", "32", dev + "p1"], check=True, capture_output=True)
        out = clonebay("save", str(path), f"disk:{dev}p1/x.image")
        assert out.returncode == 6 and "EFI system partition" in out.stderr, out.stderr
    finally:
        loopdev.detach(dev, partitions=True)


def test_unknown_label_and_unsupported_filesystem_are_named(tmp_path: Path) -> None:
    out = clonebay("verify", "disk:LABEL=NO-SUCH-STORE-LABEL/x.image")
    assert out.returncode == 12 and "no partition has LABEL=NO-SUCH-STORE-LABEL" in out.stderr
    swap = make_swap(tmp_path)
    try:
        out = clonebay("verify", f"disk:{swap.device}/x.image")
        assert out.returncode == 12 and "swap" in out.stderr, out.stderr
    finally:
        loopdev.detach(swap.device)


def make_swap(tmp_path: Path) -> StoreVolume:
    path = sparse_file(tmp_path / "swap.img", 64 * MIB)
    subprocess.run(["mkswap", str(path)], check=True, capture_output=True)
    return StoreVolume("swap", "", loopdev.attach(str(path)), path)


def test_a_full_store_is_refused_up_front_and_a_filling_one_stops_cleanly(
    quick_disk: disks.BuiltDisk, tmp_path: Path
) -> None:
    small = make_volume(tmp_path / "small.img", "ext4", "CBSSMALL", 24 * MIB)
    try:
        url = small.url("full/q.image")
        source_hash = sha256_range(quick_disk.path, 0, quick_disk.size)
        out = clonebay("save", str(quick_disk.path), url)
        assert out.returncode == 13, out.stderr
        assert "free" in out.stderr and "nothing was written" in out.stderr
        out = clonebay("save", "--no-space-check", str(quick_disk.path), url)
        assert out.returncode == 13, out.stderr
        assert "the store is full" in out.stderr and "was removed" in out.stderr, out.stderr
        assert sha256_range(quick_disk.path, 0, quick_disk.size) == source_hash
        where = tmp_path / "look"
        where.mkdir()
        subprocess.run(["mount", "-o", "ro", small.device, str(where)], check=True)
        try:
            assert not (where / "full" / "q.image").exists(), "the incomplete image was left"
        finally:
            subprocess.run(["umount", str(where)], check=True)
        fsck_clean(small)
        assert store_mounts() == []
    finally:
        loopdev.detach(small.device)


def test_a_job_file_saves_into_a_store_url(
    volumes: dict[str, StoreVolume], quick_disk: disks.BuiltDisk, tmp_path: Path
) -> None:
    source = loopdev.attach(str(quick_disk.path), read_only=True)
    try:
        url = volumes["ntfs"].url("jobs/nightly.image")
        job = tmp_path / "job.toml"
        job.write_text(f'job = "save"\nsource = "{source}"\ntarget = "{url}"\n', encoding="utf-8")
        out = clonebay("job", str(job))
        assert out.returncode == 0, out.stdout + out.stderr
        assert url in out.stdout and "read back from the store: OK" in out.stdout, out.stdout
        checked = clonebay("verify", url)
        assert checked.returncode == 0, checked.stderr
        bad = tmp_path / "bad.toml"
        bad.write_text(
            f'job = "save"\nsource = "{source}"\ntarget = "smb://u:pw@host/s/x.image"\n',
            encoding="utf-8",
        )
        out = clonebay("job", str(bad))
        assert out.returncode == 5 and "password in the URL" in out.stderr, out.stderr
    finally:
        loopdev.detach(source)


def test_mount_keeps_its_store_until_umount(
    volumes: dict[str, StoreVolume], quick_disk: disks.BuiltDisk, tmp_path: Path
) -> None:
    url = volumes["ext4"].url("browse/q.image")
    assert clonebay("save", str(quick_disk.path), url).returncode == 0
    where = tmp_path / "view"
    mounted = clonebay("mount", url, str(where))
    assert mounted.returncode == 0, mounted.stderr
    try:
        assert len(store_mounts()) == 1, "the store went away under the mounted image"
        ext = next(p for p in quick_disk.partitions if p.fstype == "ext4")
        assert ext.tree is not None
        folders = [p for p in where.iterdir() if p.name.startswith(f"p{ext.number}-")]
        name, digest = next(iter(sorted(ext.tree.files.items())))
        data = (folders[0] / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
    finally:
        out = clonebay("umount", str(where))
    assert out.returncode == 0 and "its store at" in out.stdout, out.stdout + out.stderr
    assert store_mounts() == []


def test_listing_stores_never_writes_a_dirty_ext4(tmp_path: Path) -> None:
    """``clonebay stores`` mounts every partition for a look: a crash-consistent ext4 (its
    journal not replayed) must come out byte for byte as it was (ro alone would replay it)."""
    live = make_volume(tmp_path / "live.img", "ext4", "CBSDIRTY", 64 * MIB)
    where = tmp_path / "m"
    where.mkdir()
    try:
        subprocess.run(["mount", live.device, str(where)], check=True)
        (where / "note.txt").write_text("written before the crash\n", encoding="utf-8")
        subprocess.run(["sync"], check=True)
        crashed = tmp_path / "crashed.img"
        subprocess.run(["cp", "--sparse=always", str(live.backing), str(crashed)], check=True)
        subprocess.run(["umount", str(where)], check=True)
    finally:
        loopdev.detach(live.device)
    dumped = subprocess.run(
        ["dumpe2fs", "-h", str(crashed)], capture_output=True, text=True, check=True
    )
    assert "needs_recovery" in dumped.stdout, "the copy should need journal recovery"
    device = loopdev.attach(str(crashed))
    try:
        before = sha256_range(crashed, 0, 64 * MIB)
        out = clonebay("stores", "--json")
        assert out.returncode == 0, out.stderr
        listed = [s for s in json.loads(out.stdout)["stores"] if s["device"] == device]
        assert listed and listed[0]["usable"], listed
        assert sha256_range(crashed, 0, 64 * MIB) == before, "listing wrote to the partition"
    finally:
        loopdev.detach(device)
