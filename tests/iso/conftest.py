"""The live ISO, built once per test session by the script `make iso` runs, and the small test
disks the QEMU guests get (disk factory, QUICK scale, sparse).

CLONEBAY_ISO=/path/to.iso uses an ISO built before (its .boot/ folder beside it) instead.
The build is skipped when the ISO is up to date with its inputs (build-iso.sh decides).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from clonebay.testdisks import disks
from tests.iso.live_stick import make_stick
from tests.iso.qemu import Guest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ISO = Path(os.environ.get("CLONEBAY_ISO_BUILD", "/var/tmp/clonebay-iso")) / (
    "clonebay-live-amd64.iso"
)
HOST_TOOLS = ("qemu-system-x86_64", "lb", "xorriso", "mkfs.vfat", "mcopy")
BOOT_TIMES: list[str] = []  # one line per guest booted, printed after the run


def _skip_unless_possible() -> None:
    if os.geteuid() != 0:
        pytest.skip("building the live ISO needs root (live-build), and so do the test disks")
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing and not os.environ.get("CLONEBAY_ISO"):
        pytest.skip(f"missing {', '.join(missing)}: make apt installs them (live-build/iso.mk)")


@pytest.fixture(scope="session")
def live_iso() -> Path:
    """The ISO, built (or found up to date) by live-build/build-iso.sh."""
    _skip_unless_possible()
    given = os.environ.get("CLONEBAY_ISO")
    if given:
        return Path(given)
    done = subprocess.run(
        ["nice", "-n", "10", str(REPO / "live-build" / "build-iso.sh"), str(DEFAULT_ISO)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"ISO build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return DEFAULT_ISO


@pytest.fixture(scope="session")
def iso_disks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, disks.BuiltDisk]:
    """A GPT and an MBR disk from the disk factory at QUICK scale (sparse, a few hundred MiB)."""
    _skip_unless_possible()
    work = tmp_path_factory.mktemp("iso-disks")
    return {
        "gpt": disks.gpt_disk(work / "gpt.img", disks.QUICK, work=work),
        "mbr": disks.mbr_disk(work / "mbr.img", disks.QUICK, work=work),
    }


@pytest.fixture(scope="session")
def live_stick(live_iso: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 GiB sparse stick made by make-stick from the ISO (tests/iso/live_stick.py). The
    guests that boot it run one after the other; the stores guest adds images to it."""
    image = blank(tmp_path_factory.mktemp("live-stick") / "stick.img", 2 * 1024**3)
    return make_stick(live_iso, image)


def blank(path: Path, size: int) -> Path:
    """A sparse, all-zero disk image of ``size`` bytes."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def record_boot(name: str, vm: Guest, started: float, timeout: float) -> None:
    """Note how long ``vm`` took from QEMU's start (``started``, time.monotonic()) to its serial
    root shell and to the TUI's first screen on tty1 (its "tui-ready" event, which the TUI sends
    once that screen is drawn), and systemd's own account once the boot is done. Call it right after
    ``vm.shell()``. A record for docs/live.md, never a check: on this shared 2-core machine other
    guests move the figures as much as the ISO does."""
    shell = time.monotonic() - started
    try:  # the TUI says when its first screen is drawn (CLONEBAY_READY_COMMAND)
        vm.wait_event("tui-ready /dev/tty1", timeout)
        tui = f"{vm.event_times['tui-ready /dev/tty1'] - started:.0f} s"
    except (AssertionError, TimeoutError):
        tui = "not seen"
    vm.run(f"timeout {int(timeout)} systemctl is-system-running --wait", timeout + 30)
    _, analyze = vm.run("systemd-analyze 2>&1 | head -1", 60)
    load = Path("/proc/loadavg").read_text().split()[0]
    BOOT_TIMES.append(
        f"{name}: serial shell {shell:.0f} s, TUI on tty1 {tui} after QEMU started "
        f"(host load {load}); systemd-analyze: {analyze}"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if BOOT_TIMES:
        terminalreporter.section("live ISO boot times (recorded, not asserted)")
        for line in BOOT_TIMES:
            terminalreporter.write_line(line)
