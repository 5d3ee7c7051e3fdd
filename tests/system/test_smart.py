"""SMART health of things that have none, on this host: a loop device (and its partition), an
image file, a path that is not there. smartctl itself is the oracle: run on the same loop device
it finds no SMART either, so "unknown" without asking it is the same answer, in plain words."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from clonebay.system.run import run
from clonebay.system.smart import Health, Verdict, _ask, parse, read_health
from tests.edgedisks import loop

root = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")
needs_smartctl = pytest.mark.skipif(
    shutil.which("smartctl", path="/usr/sbin:/usr/bin:/sbin") is None,
    reason="smartctl (smartmontools) is not installed: make apt installs it",
)


@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[str]:
    """A 16 MiB loop device with one partition (partition node p1)."""
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(16 << 20)
    run(["sfdisk", "--quiet", str(image)], input_bytes=b"label: gpt\ntype=linux\n")
    with loop(image, partscan=True) as dev:
        run(["partx", "--add", dev], check=False)  # "already exists" when --partscan made it
        yield dev


@root
def test_a_loop_device_and_its_partition_have_no_smart(loop_disk: str) -> None:
    expected = Health(Verdict.UNKNOWN, ("a loop device has no SMART",))
    assert read_health(loop_disk) == expected
    assert Path(f"{loop_disk}p1").exists()
    assert read_health(f"{loop_disk}p1") == expected  # a partition's health is its disk's


@root
@needs_smartctl
def test_smartctl_finds_no_smart_on_a_loop_device_either(loop_disk: str) -> None:
    health = _ask(loop_disk, 20)
    assert health == Health(
        Verdict.UNKNOWN, (f"smartctl: {loop_disk}: Unable to detect device type",)
    )
    done = run(["smartctl", "--json=c", "-a", loop_disk], check=False)
    assert done.returncode == 1  # bit 0: no device type to use (as for QEMU's virtio disk)
    assert parse(json.loads(done.stdout)) == health


@root
@needs_smartctl
def test_smartctl_that_does_not_answer_in_time_is_unknown(loop_disk: str) -> None:
    health = _ask(loop_disk, 0.001)
    assert health.verdict is Verdict.UNKNOWN
    assert health.reasons == (
        "smartctl did not answer within 0.001 s (a USB bridge can hang on SMART)",
    )


def test_an_image_file_has_no_smart(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 4096)
    assert read_health(str(image)) == Health(Verdict.UNKNOWN, ("an image file has no SMART",))


def test_a_missing_path_is_unknown_not_an_error(tmp_path: Path) -> None:
    health = read_health(str(tmp_path / "nothing"))
    assert health == Health(Verdict.UNKNOWN, ("cannot be looked at: No such file or directory",))
