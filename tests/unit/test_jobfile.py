"""The unattended job file: parsing, disk selectors, resolution and the command line it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from clonebay.cli import build_parser
from clonebay.cli.jobfile import (
    JobFileError,
    Selector,
    command_line,
    match_disk,
    parse_job,
    parse_selector,
    read_job_text,
    resolve,
)
from clonebay.errors import UsageError
from clonebay.model import Disk

GIB = 1 << 30
LIVE = Disk("/dev/sdc", 16 * GIB, model="Cruzer", serial="LIVE1", is_live_medium=True)
SRC = Disk(
    "/dev/vda",
    GIB,
    model="QEMU disk",
    serial="SRC-GPT",
    by_id=("/dev/disk/by-id/virtio-SRC-GPT",),
)
DST = Disk(
    "/dev/nvme0n1",
    2 * GIB,
    model="QEMU NVMe Ctrl",
    serial="DST-NVME",
    wwn="eui.0001",
    by_id=("/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_DST-NVME", "/dev/disk/by-id/nvme-eui.0001"),
)
TWIN = Disk("/dev/sdb", GIB, model="QEMU disk", serial="OTHER")
DISKS = [SRC, DST, TWIN, LIVE]


def test_a_full_clone_job_parses_and_becomes_the_clone_command() -> None:
    job = parse_job(
        'job = "clone"\nsource = "serial:SRC-GPT"\ntarget = "by-id:nvme-eui.0001"\n'
        '[options]\ngrow = "last"\nverify = false\n'
    )
    source, target = resolve(job, DISKS)
    assert (source, target) == ("/dev/vda", "/dev/nvme0n1")
    argv = command_line(job, source, target)
    assert argv == ["clone", "/dev/vda", "/dev/nvme0n1", "--grow", "last", "--no-verify"]
    args = build_parser().parse_args(argv)  # the CLI accepts exactly what the job builds
    assert (args.source, args.target, args.grow, args.no_verify) == (
        "/dev/vda",
        ["/dev/nvme0n1"],  # clone takes one or more targets; a job file names one
        "last",
        True,
    )


def test_save_to_a_tape_and_restore_from_an_image() -> None:
    save = parse_job(
        'job = "save"\nsource = "model:qemu nvme ctrl"\ntarget = "/dev/nst0"\n'
        "[options]\npartition = 2\noverwrite = true\n"
    )
    source, target = resolve(save, DISKS)
    assert (source, target) == ("/dev/nvme0n1", "/dev/nst0")
    argv = command_line(save, source, target)
    assert argv == [
        *("save", "/dev/nvme0n1", "/dev/nst0"),
        *("--codec", "lz4", "--partition", "2", "--overwrite"),
    ]
    build_parser().parse_args(argv)

    restore = parse_job(
        'job = "restore"\nsource = "/mnt/images/pc1"\ntarget = "wwn:EUI.0001"\n'
        "[options]\nverify = true\ndry_run = true\n"
    )
    source, target = resolve(restore, DISKS)
    assert (source, target) == ("/mnt/images/pc1", "/dev/nvme0n1")
    argv = command_line(restore, source, target)
    assert argv[:5] == ["restore", "/mnt/images/pc1", "/dev/nvme0n1", "--grow", "none"]
    assert "--verify" in argv and "--dry-run" in argv
    build_parser().parse_args(argv)


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("serial:ABC 123", "serial", "ABC 123"),
        ("model:Samsung SSD 980", "model", "Samsung SSD 980"),
        ("wwn:0x5000c500a1b2", "wwn", "0x5000c500a1b2"),
        ("by-id:ata-WDC_X_123", "by-id", "ata-WDC_X_123"),
        ("/dev/disk/by-id/usb-Kingston_1", "path", "/dev/disk/by-id/usb-Kingston_1"),
        ("/dev/sda", "path", "/dev/sda"),
    ],
)
def test_selectors_parse(text: str, kind: str, value: str) -> None:
    assert parse_selector(text) == Selector(kind, value)


@pytest.mark.parametrize("text", ["sda", "serial:", "label:X", "color:red", ""])
def test_bad_selectors_are_refused(text: str) -> None:
    with pytest.raises(JobFileError):
        parse_selector(text)


def test_matching_is_exact_and_case_insensitive_and_skips_the_live_medium() -> None:
    assert match_disk(Selector("serial", "src-gpt"), DISKS) is SRC
    assert match_disk(Selector("path", "/dev/disk/by-id/virtio-SRC-GPT"), DISKS) is SRC
    assert match_disk(Selector("path", "/dev/nvme0n1"), DISKS) is DST
    with pytest.raises(JobFileError, match="no disk matches serial:SRC"):
        match_disk(Selector("serial", "SRC"), DISKS)  # a prefix is not a match
    with pytest.raises(JobFileError, match="no disk matches serial:LIVE1"):
        match_disk(Selector("serial", "LIVE1"), DISKS)
    with pytest.raises(JobFileError, match="matches 2 disks"):
        match_disk(Selector("model", "QEMU disk"), DISKS)


def test_source_and_target_must_differ() -> None:
    job = parse_job('job = "clone"\nsource = "serial:SRC-GPT"\ntarget = "/dev/vda"\n')
    with pytest.raises(JobFileError, match="same disk"):
        resolve(job, DISKS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("job = clone", "not valid TOML"),
        ('job = "copy"\nsource = "/a"\ntarget = "/b"', "job must be one of"),
        ('job = "clone"\nsource = "/a"', "target must be"),
        ('job = "clone"\nsource = "/a"\ntarget = "/b"\nextra = 1', "unknown key"),
        ('job = "clone"\nsource = "/a"\ntarget = "/b"\n[options]\nspeed = 1', "unknown option"),
        ('job = "clone"\nsource = "/a"\ntarget = "/b"\n[options]\ncodec = "lz4"', "not apply"),
        ('job = "clone"\nsource = "/a"\ntarget = "/b"\n[options]\nverify = "yes"', "bool"),
        ('job = "save"\nsource = "/a"\ntarget = "/b"\n[options]\npartition = true', "int"),
        ('job = "clone"\nsource = "/a"\ntarget = "/b"\n[options]\ngrow = "all"', "grow must"),
        ('job = "save"\nsource = "/dev/sda"\ntarget = "-"', "cannot be -"),
        ('job = "clone"\nsource = "sda"\ntarget = "/dev/sdb"', "names no disk"),
    ],
)
def test_bad_job_files_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(JobFileError, match=message):
        parse_job(text, origin="test.toml")


def test_job_text_from_a_file_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text('job = "clone"\n', encoding="utf-8")
    assert read_job_text(str(path)) == 'job = "clone"\n'
    with pytest.raises(JobFileError, match="cannot read"):
        read_job_text(str(tmp_path / "missing.toml"))
    with pytest.raises(JobFileError, match="cannot fetch"):
        read_job_text("https://127.0.0.1:9/job.toml", timeout=2)  # port 9: discard, closed
    with pytest.raises(JobFileError, match="cannot fetch"):  # pinned http is allowed to try
        read_job_text(f"http://127.0.0.1:9/job.toml#sha256={'0' * 64}", timeout=2)
    with pytest.raises(UsageError, match="plain http"):
        read_job_text("http://127.0.0.1:9/job.toml", timeout=2)
    with pytest.raises(UsageError, match="64 hex digits"):
        read_job_text("https://127.0.0.1:9/job.toml#sha256=abc", timeout=2)


def test_yes_is_the_confirmation_of_jobs_that_overwrite_a_disk() -> None:
    text = 'job = "clone"\nsource = "serial:SRC-GPT"\ntarget = "serial:DST-NVME"\n'
    job = parse_job(text)
    assert (job.yes, job.needs_confirmation) == (False, True)
    assert "--yes" not in command_line(job, *resolve(job, DISKS))
    confirmed = parse_job(text + "yes = true\n")
    argv = command_line(confirmed, *resolve(confirmed, DISKS))
    assert argv[-1] == "--yes"
    assert build_parser().parse_args(argv).yes
    dry = parse_job(text + "[options]\ndry_run = true\n")
    assert not dry.needs_confirmation
    save = parse_job('job = "save"\nsource = "serial:SRC-GPT"\ntarget = "/img"\nyes = true\n')
    assert not save.needs_confirmation
    assert "--yes" not in command_line(save, *resolve(save, DISKS))  # save takes no --yes
    with pytest.raises(JobFileError, match="true or false"):
        parse_job(text + 'yes = "yes"\n')


def test_a_job_file_carries_the_post_copy_options() -> None:
    job = parse_job(
        'job = "restore"\nsource = "/srv/images/pc.image"\ntarget = "serial:DST-1"\nyes = true\n'
        '[options]\nhostname = "lab-pc-07"\nnew_ids = true\nefi_entry = false\n'
        "reinstall_grub = true\n"
    )
    argv = command_line(job, "/srv/images/pc.image", "/dev/nvme0n1")
    args = build_parser().parse_args(argv)
    assert (args.hostname, args.new_ids, args.efi_entry, args.reinstall_grub) == (
        "lab-pc-07",
        True,
        False,
        True,
    )
    off = parse_job(
        'job = "clone"\nsource = "/dev/vda"\ntarget = "/dev/vdb"\n[options]\nfixup = false\n'
        'map = "/srv/machines.csv"\n'
    )
    args = build_parser().parse_args(command_line(off, "/dev/vda", "/dev/vdb"))
    assert (args.no_fixup, args.map, args.hostname) == (True, "/srv/machines.csv", "")
    with pytest.raises(JobFileError, match="hostname"):
        parse_job(
            'job = "save"\nsource = "/dev/vda"\ntarget = "/srv/x"\n[options]\nhostname = "a"\n'
        )
