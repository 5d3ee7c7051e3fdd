"""clonebay mount: the view outlives the command, every filesystem sits at pN-LABEL, the
partitions are files of the right size and bytes; clonebay umount undoes all of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clonebay.browse import mounts
from tests.browse.conftest import Saved, needs_root
from tests.diskcheck import sha256_range

pytestmark = [needs_root, pytest.mark.root]


def clonebay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clonebay", *args], capture_output=True, text=True, check=False
    )


def mountinfo() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


def test_mount_tree_outlives_the_command_and_umount_undoes_it(
    saved_images: dict[str, Saved], tmp_path: Path
) -> None:
    built, image = saved_images["gpt"]
    point = tmp_path / "mnt"
    done = clonebay("mount", str(image), str(point))
    assert done.returncode == 0, done.stderr
    try:
        assert sorted(os.listdir(point)) == [".partitions", "p2-EFI", "p4-Windows", "p5-clonebay"]
        assert (point / "p5-clonebay" / "etc" / "hostname").read_bytes() == b"clonebay-test\n"
        assert (point / "p4-Windows" / "Windows" / "System32" / "config" / "SYSTEM").is_file()
        assert (point / "p2-EFI" / "EFI" / "BOOT" / "BOOTX64.EFI").is_file()
        for part in built.partitions:  # the raw partitions read back byte for byte
            if part.content_sha256:
                view = point / ".partitions" / f"p{part.number}"
                assert view.stat().st_size == part.size
                assert sha256_range(view, 0, part.size) == part.content_sha256
        with pytest.raises(OSError):
            (point / "p5-clonebay" / "new").write_text("read-only")
        assert clonebay("mount", str(image), str(point)).returncode != 0  # already mounted
    finally:
        undone = clonebay("umount", str(point))
    assert undone.returncode == 0, undone.stderr
    assert str(point) not in mountinfo()
    assert not point.exists()  # the command created it, so it removed it
    assert not mounts.state_path(point).exists()
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    assert str(point) not in loops


def test_umount_of_a_folder_that_is_not_mounted_says_so(tmp_path: Path) -> None:
    done = clonebay("umount", str(tmp_path))
    assert done.returncode == 2
    assert "not an image mounted by clonebay" in done.stderr
