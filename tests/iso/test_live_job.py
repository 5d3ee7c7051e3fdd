"""An unattended job from the kernel command line (direct -kernel/-initrd boot, as a PXE or lab
setup would do): `clonebay.job=LABEL=CBJOB:/job.toml` names a job file on a second small stick,
the job clones a disk named by serial onto a disk named by serial, logs to the serial console,
and `clonebay.after=poweroff` turns the machine off; then the host checks every file."""

from __future__ import annotations

import subprocess
from pathlib import Path

from clonebay.engine.inspect import inspect_disk
from clonebay.testdisks import disks
from tests.diskcheck import assert_disk_matches
from tests.iso.conftest import blank
from tests.iso.qemu import Disk, Guest, direct_kernel

MIB = 1 << 20
JOB = """\
# clone the disk with serial SRC-GPT onto the disk with serial JOB-TARGET
job = "clone"
source = "serial:SRC-GPT"
target = "serial:JOB-TARGET"
yes = true  # the technician's confirmation: nobody is at the keyboard to answer

[options]
grow = "last"
verify = true
"""


def job_stick(path: Path, text: str) -> Path:
    """A 16 MiB FAT stick labelled CBJOB holding /job.toml."""
    blank(path, 16 * MIB)
    subprocess.run(["mkfs.vfat", "-n", "CBJOB", str(path)], check=True, capture_output=True)
    job = path.with_suffix(".toml")
    job.write_text(text, encoding="utf-8")
    subprocess.run(["mcopy", "-i", str(path), str(job), "::/job.toml"], check=True)
    return path


def test_job_from_the_kernel_command_line_runs_and_powers_off(
    live_iso: Path, iso_disks: dict[str, disks.BuiltDisk], tmp_path: Path
) -> None:
    gpt = iso_disks["gpt"]
    kernel = direct_kernel(live_iso, "clonebay.job=LABEL=CBJOB:/job.toml clonebay.after=poweroff")
    target = blank(tmp_path / "target.img", gpt.size + 128 * MIB)
    vm = Guest(
        workdir=tmp_path / "vm",
        iso=live_iso,
        kernel=kernel,
        disks=[
            Disk(gpt.path, "virtio", "SRC-GPT", readonly=True),
            Disk(target, "sata", "JOB-TARGET"),
            Disk(job_stick(tmp_path / "job.img", JOB), "usb", "JOB-STICK"),
        ],
    )
    try:
        vm.start()
        vm.wait_event("job-start", 600)
        exit_event = vm.wait_event("job-exit", 1200)
        assert exit_event == "job-exit 0", (tmp_path / "vm" / "serial.log").read_text()
        assert vm.wait_exit(timeout=300) == 0  # clonebay.after=poweroff
    finally:
        vm.close()
    log = bytes(vm.output)
    assert b"clonebay-job: start LABEL=CBJOB:/job.toml" in log
    assert b"clonebay-job: exit 0" in log
    table = inspect_disk(str(target)).table
    layout = {p.number: (p.start, p.size) for p in table.partitions}
    assert_disk_matches(target, gpt, tmp_path, layout)
