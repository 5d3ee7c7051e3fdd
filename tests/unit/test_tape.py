"""Tape drives: discovery from a sysfs tree, fixed-size records, `clonebay list` showing them."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from clonebay.report import format_tape_table, tapes_json
from clonebay.system.tape import MTIOCTOP, TapeDrive, TapeStream, is_stream_device, list_tapes


def _fake_sysfs(root: Path) -> Path:
    """/sys/class/scsi_tape as the st driver lays it out for drive 0 (and drive 10)."""
    for number, serial in ((0, b"HU1234"), (10, b"")):
        device = root / f"devices/{number}:0:0:0"
        device.mkdir(parents=True)
        (device / "vendor").write_text("IBM     \n")
        (device / "model").write_text("ULT3580-TD8     \n")
        if serial:
            (device / "vpd_pg80").write_bytes(bytes([1, 0x80, 0, len(serial)]) + serial)
        for name in (
            f"st{number}",
            f"st{number}l",
            f"nst{number}",
            f"nst{number}a",
            f"nst{number}m",
        ):
            (root / "class" / name).mkdir(parents=True)
            (root / "class" / name / "device").symlink_to(device)
    return root / "class"


def test_no_rewind_devices_are_listed_in_drive_order(tmp_path: Path) -> None:
    tapes = list_tapes(_fake_sysfs(tmp_path))
    assert tapes == [
        TapeDrive("/dev/nst0", "/dev/st0", "IBM", "ULT3580-TD8", "HU1234"),
        TapeDrive("/dev/nst10", "/dev/st10", "IBM", "ULT3580-TD8", ""),
    ]
    table = format_tape_table(tapes)
    assert "/dev/nst0" in table and "IBM ULT3580-TD8" in table and "HU1234" in table
    assert tapes_json(tapes)[0]["kind"] == "tape"
    assert list_tapes(tmp_path / "absent") == []


def test_a_stream_goes_out_in_records_and_nothing_else(tmp_path: Path) -> None:
    """What reaches the device is exactly the stream: a reader sees no padding after its end."""
    fifo = tmp_path / "tape"
    os.mkfifo(fifo)
    data = bytearray()

    def drain() -> None:
        with open(fifo, "rb", buffering=0) as f:
            while block := f.read(1 << 20):
                data.extend(block)

    reader = threading.Thread(target=drain)
    reader.start()
    payload = os.urandom(100_000)
    with TapeStream(str(fifo), record=4096) as stream:
        stream.write(payload[:10])
        stream.write(memoryview(payload)[10:])
    reader.join(timeout=10)
    assert bytes(data) == payload  # 24 whole records and a short one, no padding


def test_the_records_are_the_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each os.write() is one tape block: whole records, then the remainder."""
    sizes: list[int] = []
    real_write = os.write

    def record_write(fd: int, data: bytes) -> int:
        sizes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", record_write)
    with TapeStream(os.devnull, record=4096) as stream:
        stream.write(bytes(5000))
        stream.write(bytes(5000))
    assert sizes == [4096, 4096, 1808]


def test_mtiocop_is_the_kernel_number() -> None:
    assert MTIOCTOP == 0x40086D01  # _IOW('m', 1, struct mtop) on x86-64


def test_character_devices_are_stream_targets(tmp_path: Path) -> None:
    assert is_stream_device("/dev/null")
    assert not is_stream_device(str(tmp_path))
    assert not is_stream_device(str(tmp_path / "missing"))


def test_an_unopenable_tape_is_a_device_error(tmp_path: Path) -> None:
    from clonebay.errors import DeviceError

    with pytest.raises(DeviceError, match="cannot open"):
        TapeStream(str(tmp_path / "no" / "nst0"))
