"""The rescue's read bound (system/readtimeout.py) on this machine's own devices: a loop device
and a plain file have no command timeout, so a rescue leaves them as they are and says so
(None); the SATA and USB disks of the live system have one, checked in the QEMU guest
(tests/iso/test_live_rescue.py: 30 s lowered to 10 s during a rescue, 30 s again after)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clonebay.system.readtimeout import bounded_reads, timeout_file
from tests.edgedisks import loop

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")


def test_a_loop_device_or_a_file_has_no_timeout_to_bound(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    assert timeout_file(str(image)) is None
    with loop(image) as dev:
        assert Path(f"/sys/block/{Path(dev).name}").is_dir()  # a real block device, but
        assert timeout_file(dev) is None  # not a SCSI one: no device/timeout
        with bounded_reads(dev) as bound:
            assert bound is None
    assert timeout_file(str(tmp_path / "missing")) is None
