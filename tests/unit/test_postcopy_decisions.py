"""The post-copy pass's decisions that need no disk: when GRUB is stale, what moved, how the
old ids are replaced in files, how /etc/hosts follows a new name, and what the Plan says."""

from __future__ import annotations

import pytest

from clonebay.engine.postcopy import PostcopyOptions, PostcopyReport
from clonebay.engine.postcopy.apply import CopyFacts, Pass, _grub_stale
from clonebay.engine.postcopy.ids import IdMap
from clonebay.engine.postcopy.linux import _hosts_text, check_hostname
from clonebay.engine.postcopy.preview import SourceVolume, preview
from clonebay.engine.postcopy.preview import check_hostname as name_for
from clonebay.engine.postcopy.refs import replace_ids
from clonebay.errors import UsageError
from clonebay.model import VolumeState


def job(options: PostcopyOptions, facts: CopyFacts, fs: dict[str, str] | None = None) -> Pass:
    return Pass("disk.img", options, facts, PostcopyReport("disk.img"), None, IdMap(fs=fs or {}))


@pytest.mark.parametrize(
    ("options", "facts", "fs", "why"),
    [
        (PostcopyOptions(), CopyFacts(), {}, ""),
        (PostcopyOptions(), CopyFacts({2: (1 << 20, 2 << 20)}, "gpt"), {}, ""),
        (PostcopyOptions(), CopyFacts({2: (1 << 20, 2 << 20)}, "msdos"), {}, "partitions moved"),
        (PostcopyOptions(reinstall_grub=True), CopyFacts(), {}, "asked for"),
        (PostcopyOptions(new_ids=True), CopyFacts(), {"a": "b"}, "filesystem ids changed"),
    ],
)
def test_when_grub_is_stale(
    options: PostcopyOptions, facts: CopyFacts, fs: dict[str, str], why: str
) -> None:
    said = _grub_stale(job(options, facts, fs))
    assert (why in said) if why else said == ""


def test_ids_are_replaced_as_whole_tokens_in_the_case_the_file_used() -> None:
    text = (
        "UUID=1A2B-3C4D /boot/efi vfat\n"
        "UUID=0fc63daf-8483-4772-8e79-3d69d8477de4 / ext4\n"
        "# not 0fc63daf-8483-4772-8e79-3d69d8477de4x\n"
        "PARTUUID=ABCD /x\n"
    )
    pairs = [
        ("1a2b-3c4d", "99aa-0001"),
        ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", "11111111-2222-3333-4444-555555555555"),
    ]
    out = replace_ids(text, pairs)
    assert "UUID=99AA-0001 /boot/efi" in out
    assert "UUID=11111111-2222-3333-4444-555555555555 / ext4" in out
    assert "0fc63daf-8483-4772-8e79-3d69d8477de4x" in out  # not a whole token: kept
    assert "PARTUUID=ABCD" in out


def test_hosts_follows_the_new_name() -> None:
    text = "127.0.0.1\tlocalhost\n127.0.1.1\told.example.org old # the host\n::1 localhost\n"
    out = _hosts_text(text, "old", "new")
    assert "127.0.1.1\told.example.org\tnew # the host" in out
    assert "127.0.0.1\tlocalhost" in out
    assert _hosts_text("127.0.0.1 localhost\n", "old", "new").endswith("127.0.1.1\tnew\n")


@pytest.mark.parametrize("name", ["-a", "a-", "a b", "a_b", "x" * 64, "123", "", "ä"])
def test_bad_host_names(name: str) -> None:
    with pytest.raises(UsageError):
        check_hostname(name)


def test_a_name_windows_cannot_take_is_refused_when_the_source_has_ntfs() -> None:
    linux = [SourceVolume("p2", "", "ext4", VolumeState.CLEAN)]
    windows = [*linux, SourceVolume("p3", "", "ntfs", VolumeState.CLEAN)]
    name_for("a-long-linux-host-name", linux)  # 22 characters: fine for Linux
    with pytest.raises(UsageError, match="15"):
        name_for("a-long-linux-host-name", windows)


def test_the_plan_says_what_the_pass_will_do() -> None:
    esp = SourceVolume("p1", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "fat32", VolumeState.CLEAN)
    win = SourceVolume("p3", "", "ntfs", VolumeState.HIBERNATED)
    lines = preview(PostcopyOptions(hostname="pc-07", new_ids=True), [esp, win])
    text = "\n".join(lines)
    assert "the machine becomes pc-07" in text and "new disk, partition and filesystem ids" in text
    assert "BOOTX64.EFI added when missing" in text
    assert "p3 (ntfs) is not edited: Windows is hibernated" in text
    assert preview(PostcopyOptions(enabled=False), [esp]) == [
        "no post-copy pass (the target stays exactly as the source)"
    ]
