"""make-stick on the real live ISO: the layout logic on its system area, then (root) whole runs
onto loop devices over sparse files, checked with the tools' own eyes (sfdisk, blkid -p,
fsck.exfat, e2fsck, sgdisk, exfat-fuse), and every refusal, none of which writes a byte.

The cached ISO (/var/tmp/clonebay-iso, or CLONEBAY_ISO) is held open for the module and read
through /proc/self/fd, so an ISO build that replaces it meanwhile cannot mix two ISOs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clonebay import cli
from clonebay.errors import InputError, TargetTooSmallError, UsageError
from clonebay.system import gpt, mbr
from clonebay.system.stick import (
    IMAGES_LABEL,
    MIB,
    MIN_IMAGES,
    SECTOR,
    SYSTEM_AREA,
    ImagesFs,
    backup_gpt,
    chs,
    find_stick_store,
    mbr_entry,
    needed_size,
    parse_iso,
    patch_head,
    plan_stick,
)

GIB = 1 << 30
ISO = Path(os.environ.get("CLONEBAY_ISO", "/var/tmp/clonebay-iso/clonebay-live-amd64.iso"))
SLOT3 = mbr.TABLE_OFFSET + 32  # MBR slot 3: bytes 478-493
root = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")


@pytest.fixture(scope="module")
def iso() -> Iterator[str]:
    """The ISO, as a path to a descriptor held open for the module."""
    if not ISO.exists():
        pytest.skip(f"no live ISO at {ISO}: make iso builds it")
    fd = os.open(ISO, os.O_RDONLY)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def sha256(path: str, offset: int = 0, length: int | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        left = length if length is not None else 1 << 62
        while left and (block := f.read(min(4 * MIB, left))):
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def head_of(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(SYSTEM_AREA + 2048)


# --- the layout, pure -------------------------------------------------------------------------


def test_the_cached_iso_is_the_hybrid_the_design_expects(iso: str) -> None:
    layout = parse_iso(head_of(iso), os.path.getsize(iso))
    # fdisk -l: 1 (active, type 0) = the ISO from sector 64; 2 (0xef) = efi.img inside it
    first, esp = layout.mbr_entries
    assert (first.number, first.type_id, first.start_lba, first.bootable) == (1, 0, 64, True)
    assert first.start_lba + first.sectors == layout.size // SECTOR
    assert esp.type_id == 0xEF and first.start_lba < esp.start_lba < layout.size // SECTOR
    assert layout.free_slot == 3
    assert (
        layout.gpt_header is not None
        and layout.gpt_header.alternate_lba == layout.size // SECTOR - 1
    )
    assert [e.index for e in layout.gpt_entries] == [1, 2] and layout.gpt_free == 3


def test_plan_puts_an_aligned_partition_after_the_iso(iso: str) -> None:
    layout = parse_iso(head_of(iso), os.path.getsize(iso))
    plan = plan_stick(layout, 2 * GIB)
    assert plan.start % MIB == 0 and plan.size % MIB == 0
    assert layout.size <= plan.start < layout.size + MIB
    backup_bytes = (layout.gpt_array_sectors + 1) * SECTOR
    assert 2 * GIB - MIB - backup_bytes < plan.end <= 2 * GIB - backup_bytes
    small = plan_stick(layout, needed_size(layout))
    assert small.size == MIN_IMAGES
    with pytest.raises(TargetTooSmallError) as refused:
        plan_stick(layout, needed_size(layout) - SECTOR)
    assert str(needed_size(layout)) in refused.value.message
    assert str(layout.size) in refused.value.message


def test_patch_changes_only_the_new_entries_and_the_gpt_bookkeeping(iso: str) -> None:
    head = head_of(iso)[:SYSTEM_AREA]
    layout = parse_iso(head_of(iso), os.path.getsize(iso))
    plan = plan_stick(layout, 2 * GIB, unique_guid=uuid.UUID(int=7))
    patched = patch_head(head, plan)
    assert layout.gpt_header is not None
    entry3 = layout.gpt_header.entries_lba * SECTOR + 2 * layout.gpt_header.entry_size
    allowed = (
        set(range(SLOT3, SLOT3 + 16))
        | {SECTOR + n for n in (*range(16, 20), *range(32, 40), *range(48, 56), *range(88, 92))}
        | set(range(entry3, entry3 + gpt.ENTRY.size))
    )
    changed = {i for i in range(SYSTEM_AREA) if head[i] != patched[i]}
    assert changed <= allowed
    assert patched[SLOT3 : SLOT3 + 16] == mbr_entry(plan)
    slot = mbr.parse_entries(patched[:SECTOR])[2]
    assert (slot.type_id, slot.start_lba * SECTOR, slot.sectors * SECTOR) == (
        0x07,
        plan.start,
        plan.size,
    )
    # The GPT parses with both CRCs right, primary and backup, and names the same partition.
    last = 2 * GIB // SECTOR - 1
    primary = gpt.parse_header(patched[SECTOR : 2 * SECTOR], "primary")
    array = patched[primary.entries_lba * SECTOR :][: primary.entry_count * primary.entry_size]
    entries = gpt.parse_entries(primary, array, "primary")
    assert primary.alternate_lba == last and primary.last_usable_lba * SECTOR >= plan.end - SECTOR
    images = entries[2]
    assert (images.first_lba * SECTOR, (images.last_lba + 1) * SECTOR) == (plan.start, plan.end)
    assert images.name == IMAGES_LABEL and images.unique_guid == str(uuid.UUID(int=7)).upper()
    backup = backup_gpt(patched, plan)
    assert backup is not None and backup[0] + len(backup[1]) == 2 * GIB
    header = gpt.parse_header(backup[1][-SECTOR:], "backup")
    assert (header.my_lba, header.alternate_lba) == (last, 1)
    assert header.entries_lba * SECTOR == backup[0]
    assert gpt.parse_entries(header, backup[1], "backup") == entries


def test_ext4_gets_type_83_and_the_linux_guid(iso: str) -> None:
    layout = parse_iso(head_of(iso), os.path.getsize(iso))
    plan = plan_stick(layout, GIB, ImagesFs.EXT4, "CLONEBAY-IMAGES")
    patched = patch_head(head_of(iso)[:SYSTEM_AREA], plan)
    assert mbr.parse_entries(patched[:SECTOR])[2].type_id == 0x83
    primary = gpt.parse_header(patched[SECTOR : 2 * SECTOR], "primary")
    array = patched[primary.entries_lba * SECTOR :][: primary.entry_count * primary.entry_size]
    assert gpt.parse_entries(primary, array, "p")[2].type_guid.startswith("0FC63DAF")


def test_labels_that_do_not_fit_are_refused(iso: str) -> None:
    layout = parse_iso(head_of(iso), os.path.getsize(iso))
    with pytest.raises(UsageError):
        plan_stick(layout, GIB, ImagesFs.EXFAT, "CLONEBAY-IMG")  # 12: exFAT takes 11
    with pytest.raises(UsageError):
        plan_stick(layout, GIB, ImagesFs.EXT4, "x" * 17)
    assert len(IMAGES_LABEL) <= 11


def test_what_is_not_a_hybrid_iso_is_refused(iso: str) -> None:
    head = bytearray(head_of(iso))
    size = os.path.getsize(iso)
    for damage in (slice(510, 512), slice(SYSTEM_AREA + 1, SYSTEM_AREA + 6)):
        bad = bytearray(head)
        bad[damage] = bytes(damage.stop - damage.start)
        with pytest.raises(InputError):
            parse_iso(bytes(bad), size)
    full = bytearray(head)
    used = bytes.fromhex("00" * 4 + "83" + "00" * 3 + "01" + "00" * 3 + "01" + "00" * 3)
    full[SLOT3 : SLOT3 + 32] = used + used
    with pytest.raises(InputError, match="no free slot"):
        parse_iso(bytes(full), size)
    with pytest.raises(InputError, match="past the ISO's end"):
        parse_iso(bytes(head), size - MIB)


def test_chs_in_the_isos_geometry() -> None:
    # 64 heads x 32 sectors: LBA 661503 is cylinder 322, head 63, sector 32 (xorriso's entry 1)
    assert chs(661503) == bytes.fromhex("3f6042")
    assert chs(64) == bytes.fromhex("020100")
    assert chs(1024 * 2048) == bytes.fromhex("3fe0ff")  # past cylinder 1023: the largest


def test_find_stick_store_follows_the_by_label_link(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "sdz3").touch()
    (tmp_path / IMAGES_LABEL).symlink_to(tmp_path / "dev" / "sdz3")
    assert find_stick_store(by_label=str(tmp_path)) == str(tmp_path / "dev" / "sdz3")


# --- whole runs on loop devices (root) ---------------------------------------------------------

LoopMaker = Callable[[Path], str]


@pytest.fixture(scope="module")
def loops() -> Iterator[LoopMaker]:
    """Attach image files as loop devices; detach only those (their partitions first)."""
    attached: list[str] = []

    def attach(image: Path) -> str:
        dev = subprocess.check_output(["losetup", "-f", "--show", str(image)], text=True).strip()
        attached.append(dev)
        return dev

    yield attach
    for dev in reversed(attached):
        subprocess.run(["umount", "-R", dev], capture_output=True, check=False)
        subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)


def sparse(path: Path, size: int, pattern: bool = False) -> Path:
    """A sparse file; with ``pattern``, non-zero bytes at its start, middle and end (a write
    anywhere the job would touch changes its hash)."""
    with open(path, "wb") as f:
        f.truncate(size)
        if pattern:
            for at in (0, size // 2, size - MIB):
                f.seek(at)
                f.write(os.urandom(MIB))
    return path


def make_stick(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["make-stick", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def stick(
    iso: str, loops: LoopMaker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, object]]]:
    """A 2 GiB loop device made into a stick (exFAT), with make-stick's JSON result."""
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    dev = loops(sparse(tmp_path_factory.mktemp("stick") / "stick.img", 2 * GIB, pattern=True))
    done = subprocess.run(
        [sys.executable, "-m", "clonebay", "make-stick", iso, dev, "--yes", "--json"],
        capture_output=True,
        text=True,
        check=False,
        pass_fds=(int(iso.rsplit("/", 1)[1]),),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["event"] == "result"
    yield dev, result


@root
def test_the_iso_reads_back_identical_with_only_slot_3_added(
    iso: str, stick: tuple[str, dict[str, object]]
) -> None:
    dev, result = stick
    size = os.path.getsize(iso)
    assert result["iso_size"] == size and result["iso_sha256"] == sha256(iso)
    assert sha256(dev, SYSTEM_AREA, size - SYSTEM_AREA) == sha256(iso, SYSTEM_AREA)
    with open(dev, "rb") as f:
        on_stick = f.read(SECTOR)
    original = head_of(iso)[:SECTOR]
    # boot code (0-439), disk signature (440-445), the ISO's entries 1 and 2; slot 4; 0x55AA
    assert on_stick[:SLOT3] == original[:SLOT3]
    assert on_stick[SLOT3 + 16 :] == original[SLOT3 + 16 :]


@root
def test_sfdisk_sees_the_aligned_images_partition(stick: tuple[str, dict[str, object]]) -> None:
    dev, result = stick
    table = json.loads(subprocess.check_output(["sfdisk", "--json", dev]))["partitiontable"]
    assert table["label"] == "dos"
    third = table["partitions"][2]
    assert third["node"].endswith("3") and third["type"] == "7"
    assert third["start"] * SECTOR == result["partition_start"]
    assert third["size"] * SECTOR == result["partition_size"]
    assert third["start"] % 2048 == 0 and third["size"] % 2048 == 0
    assert (third["start"] + third["size"]) * SECTOR <= 2 * GIB
    assert [p["type"] for p in table["partitions"][:2]] == ["0", "ef"]


@root
def test_gpt_stays_as_valid_as_the_isos(iso: str, stick: tuple[str, dict[str, object]]) -> None:
    """sgdisk -v finds the same problems on the stick as on the ISO (the ESP inside the ISO's
    partition, by design) and no others: CRCs, backup location and bounds are right."""
    dev, _ = stick

    def problems(path: str) -> list[str]:
        fds = (int(path.rsplit("/", 1)[1]),) if path.startswith("/proc/self/fd/") else ()
        text = subprocess.run(
            ["sgdisk", "-v", path], capture_output=True, text=True, check=False, pass_fds=fds
        ).stdout
        return [line for line in text.splitlines() if "roblem" in line]

    assert problems(dev) == problems(iso)


@root
def test_the_partition_holds_a_clean_labelled_exfat(stick: tuple[str, dict[str, object]]) -> None:
    _, result = stick
    node = str(result["partition"])
    probe = subprocess.check_output(["blkid", "-p", "-o", "export", node], text=True)
    assert "TYPE=exfat" in probe.splitlines() and f"LABEL={IMAGES_LABEL}" in probe.splitlines()
    fsck = subprocess.run(["fsck.exfat", "-n", node], capture_output=True, text=True, check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


@root
def test_a_file_round_trips_through_exfat_fuse(
    stick: tuple[str, dict[str, object]], tmp_path: Path
) -> None:
    node = str(stick[1]["partition"])
    data = os.urandom(3 * MIB + 17)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount.exfat-fuse", node, str(mnt)], check=True, capture_output=True)
    try:
        (mnt / "image.bin").write_bytes(data)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    fsck = subprocess.run(["fsck.exfat", "-n", node], capture_output=True, text=True, check=False)
    assert fsck.returncode == 0 and "files 1" in fsck.stdout, fsck.stdout
    subprocess.run(["mount.exfat-fuse", "-o", "ro", node, str(mnt)], check=True)
    try:
        assert (mnt / "image.bin").read_bytes() == data
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@root
def test_find_stick_store_finds_it_by_probing(stick: tuple[str, dict[str, object]]) -> None:
    """No by-label link here (no udev rules ran for the new filesystem): blkid finds it."""
    assert find_stick_store(by_label="/nonexistent") == stick[1]["partition"]


@root
def test_ext4_stick(
    iso: str,
    loops: LoopMaker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dev = loops(sparse(tmp_path / "ext4.img", 512 * MIB, pattern=True))
    code, out, err = make_stick(capsys, iso, dev, "--fs", "ext4", "--label", "IMAGES", "--yes")
    assert code == 0, err
    assert f"made {dev} a clonebay stick" in out and "ext4" in out
    node = f"{dev}p3"
    assert 'TYPE="ext4"' in subprocess.check_output(["blkid", "-p", node], text=True)
    fsck = subprocess.run(["e2fsck", "-fn", node], capture_output=True, text=True, check=False)
    assert fsck.returncode == 0, fsck.stdout
    table = json.loads(subprocess.check_output(["sfdisk", "--json", dev]))["partitiontable"]
    assert table["partitions"][2]["type"] == "83"


# --- refusals: nothing written ------------------------------------------------------------------


@root
def test_a_device_too_small_is_refused_untouched(
    iso: str, loops: LoopMaker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = os.path.getsize(iso) + 32 * MIB
    image = sparse(tmp_path / "small.img", size // MIB * MIB, pattern=True)
    dev, before = loops(image), sha256(str(image))
    code, _, err = make_stick(capsys, iso, dev, "--yes")
    assert code == 7, err
    assert str(size // MIB * MIB) in err and "nothing was written" in err
    assert sha256(str(image)) == before


@root
def test_a_partition_is_refused_untouched(
    iso: str, loops: LoopMaker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = sparse(tmp_path / "parted.img", GIB)
    subprocess.run(["sfdisk", "-q", str(image)], input=b"start=2048, type=83\n", check=True)
    dev = loops(image)
    subprocess.run(["partx", "-a", dev], check=True)
    before = sha256(str(image))
    code, _, err = make_stick(capsys, iso, f"{dev}p1", "--yes")
    assert code == 6 and "is a partition" in err, err
    assert sha256(str(image)) == before


@root
def test_without_yes_and_terminal_it_is_refused_untouched(
    iso: str, loops: LoopMaker, tmp_path: Path
) -> None:
    image = sparse(tmp_path / "ask.img", GIB, pattern=True)
    dev, before = loops(image), sha256(str(image))
    done = subprocess.run(
        [sys.executable, "-m", "clonebay", "make-stick", str(ISO), dev],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "--yes" in done.stderr, done.stderr
    assert sha256(str(image)) == before


@root
def test_a_mounted_device_is_refused_untouched(
    iso: str, loops: LoopMaker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = sparse(tmp_path / "mounted.img", GIB)
    subprocess.run(["sfdisk", "-q", str(image)], input=b"start=2048, type=83\n", check=True)
    dev = loops(image)
    subprocess.run(["partx", "-a", dev], check=True)
    subprocess.run(["mkfs.ext4", "-q", f"{dev}p1"], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "ro", f"{dev}p1", str(mnt)], check=True)
    try:
        before = sha256(dev)
        code, _, err = make_stick(capsys, iso, dev, "--yes")
        assert code == 6 and "mounted" in err, err
        assert sha256(dev) == before
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
