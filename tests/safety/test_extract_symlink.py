"""Safety audit #17: ``clonebay extract`` never writes through a symlink in DEST. The image is
hostile: its ext4 holds ``a/evil``, a symlink to a folder outside DEST (think /root/.ssh), and
``b/evil/authorized_keys``. Whether the link was in DEST before (a second run) or the same
extract made it, the extract stops with exit code 6 naming the link, and nothing is written
outside DEST. Symlinks from the image are made as symlinks, and extracting twice works."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from clonebay.errors import SafetyError
from tests.edgedisks import MIB, clonebay, mbr_disk, mkext

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="FUSE and loop devices")
KEY = b"ssh-ed25519 AAAA... attacker\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside DEST that the image's link points at (empty: it must stay so)."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


@pytest.fixture
def image(tmp_path: Path, outside: Path) -> Path:
    files = tmp_path / "files"
    (files / "a").mkdir(parents=True)
    (files / "a" / "evil").symlink_to(outside)
    (files / "b" / "evil").mkdir(parents=True)
    (files / "b" / "evil" / "authorized_keys").write_bytes(KEY)
    (files / "b" / "notes.txt").write_text("harmless\n")
    disk = mbr_disk(tmp_path / "disk.img", 32 * MIB, "start=2048, size=28MiB, type=83\n")
    mkext(disk, MIB, 28 * MIB, root=files)
    saved = tmp_path / "image"
    done = clonebay("save", str(disk), str(saved))
    assert done.returncode == 0, done.stderr
    return saved


def refused(done: subprocess.CompletedProcess[str], link: Path) -> None:
    assert done.returncode == SafetyError.exit_code, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert str(link) in message and "symlink" in message, message


def test_a_symlink_already_in_dest_is_refused(image: Path, outside: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "evil").symlink_to(outside)  # left by an earlier extract of a/evil
    refused(clonebay("extract", f"{image}:p1", "b/evil", str(dest)), dest / "evil")
    assert list(outside.iterdir()) == []
    assert os.readlink(dest / "evil") == str(outside)


def test_a_symlink_made_by_the_same_extract_is_refused(
    image: Path, outside: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    refused(clonebay("extract", f"{image}:p1", "a/evil", "b/evil", str(dest)), dest / "evil")
    assert list(outside.iterdir()) == []
    assert os.readlink(dest / "evil") == str(outside), "the image's link is made as a link"


def test_a_file_is_not_written_through_a_symlink(
    image: Path, outside: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "authorized_keys").symlink_to(outside / "authorized_keys")  # dangling, outside
    link = dest / "authorized_keys"
    refused(clonebay("extract", f"{image}:p1", "b/evil/authorized_keys", str(dest)), link)
    assert list(outside.iterdir()) == []


def test_links_stay_links_and_a_second_extract_replaces_files(
    image: Path, outside: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    for _ in range(2):
        done = clonebay("extract", f"{image}:p1", "/", str(dest))
        assert done.returncode == 0, done.stdout + done.stderr
        assert os.readlink(dest / "a" / "evil") == str(outside)
        assert (dest / "b" / "evil" / "authorized_keys").read_bytes() == KEY
        assert (dest / "b" / "notes.txt").read_text() == "harmless\n"
    assert list(outside.iterdir()) == []
