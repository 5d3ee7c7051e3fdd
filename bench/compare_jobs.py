"""The compare bench's jobs: what each tool runs, how it is timed, and how its copy is checked.

A job is a list of commands (each a pipeline, see measure.Command) run one after another and
timed together, from the first start to the end of a ``sync`` after the last exit (tools that
leave dirty pages behind pay for them). User and system CPU come from ``os.wait4`` of every
process started: each process's figure includes the descendants it waited for (ocs-sr's whole
tree of shell scripts, partclone and zstd). Preparing a target (discarding it, giving it the
source's partition table for per-partition tools) and checking the copy are not timed.

A copy is checked against the source partition by partition (``cmp``); a partition that is not
byte-identical is checked with its filesystem's own fsck (some tools skip backup superblocks or
boot sectors, see bench/RESULTS.md), and the partition table's starts, sizes and types are
compared. A missing partition or table is reported as BROKEN, a failing fsck as FAILS.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from compare_disk import Part, blank, part_dev, refresh_partitions
from measure import Command, busy_cpu_seconds

FSCK = {"ext4": ["e2fsck", "-fn"], "ntfs": ["ntfsfix", "-n"], "fat32": ["fsck.fat", "-n"]}


@dataclass
class Run:
    """One timed run of a job."""

    seconds: float  # until the sync after the last exit
    exit_seconds: float
    user: float
    system: float
    other_cpu: float  # CPU time everything else used meanwhile (kernel writeback included)
    busy_before: float = 0.0


@dataclass
class Job:
    """One way to do one task, and its runs."""

    name: str
    group: str  # "clone", "save" or "restore"
    commands: Callable[[], list[Command]]
    used: int  # bytes of used data it copies (the MB/s denominator)
    versus: str = ""  # the clonebay job it is compared with (empty for clonebay's own)
    target: str = ""  # a device it writes: discarded before each run
    table_first: bool = False  # the target gets the source's partition table (untimed)
    check: tuple[Part, ...] = ()  # partitions that must equal the source's afterwards
    check_table: bool = False
    outputs: list[Path] = field(default_factory=list)  # removed before each run
    after: Callable[[], None] | None = None  # untimed, after each run
    reads: str = ""  # the save job whose image this restore job reads
    note: str = ""
    size: int = 0  # bytes its outputs take on the host (images)
    runs: list[Run] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # the commands of the last run

    @property
    def clonebay(self) -> bool:
        return not self.versus


def _run_pipeline(cmd: Command, out: IO[bytes], err: IO[bytes]) -> tuple[float, float, list[int]]:
    """Start every stage of ``cmd``, wait for each with wait4; (user s, system s, exit codes)."""
    procs: list[subprocess.Popen[bytes]] = []
    user = system = 0.0
    codes = []
    try:
        prev: IO[bytes] | int = subprocess.DEVNULL
        for i, argv in enumerate(cmd.stages):
            last = i == len(cmd.stages) - 1
            proc = subprocess.Popen(
                argv, stdin=prev, stdout=out if last else subprocess.PIPE, stderr=err
            )
            if not isinstance(prev, int):
                prev.close()  # the next stage owns the read end now
            if proc.stdout is not None:
                prev = proc.stdout
            procs.append(proc)
        for proc in procs:
            _pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            codes.append(proc.returncode)
            user += usage.ru_utime
            system += usage.ru_stime
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
    return user, system, codes


def run_commands(commands: list[Command], log: Path) -> Run:
    """Run the commands one after another (pipelines inside), then sync; raises on a failure."""
    user = system = 0.0
    busy0 = busy_cpu_seconds()
    started = time.perf_counter()
    with open(log, "ab") as err:
        for cmd in commands:
            err.write(f"\n$ {cmd.text()}\n".encode())
            err.flush()
            with contextlib.ExitStack() as stack:
                out = stack.enter_context(open(cmd.stdout_file, "wb")) if cmd.stdout_file else err
                u, s, codes = _run_pipeline(cmd, out, err)
            user, system = user + u, system + s
            if any(codes):
                raise RuntimeError(f"{cmd.text()} exited {codes}; see {log}")
    exited = time.perf_counter()
    os.sync()
    synced = time.perf_counter()
    other = busy_cpu_seconds() - busy0 - user - system
    return Run(synced - started, exited - started, user, system, max(0.0, other))


def prepare_target(job: Job, source: str) -> None:
    """Untimed: a fresh zeroed target, with the source's partition table if the job needs it."""
    if not job.target:
        return
    blank(job.target)
    if job.table_first:
        subprocess.run(
            ["sgdisk", f"--replicate={job.target}", source], check=True, capture_output=True
        )
        refresh_partitions(job.target)


def _table(dev: str) -> list[tuple[int, int, str]]:
    proc = subprocess.run(["sfdisk", "--json", dev], capture_output=True, text=True, check=False)
    if proc.returncode:
        return []
    parts = json.loads(proc.stdout)["partitiontable"].get("partitions", [])
    return [(int(p["start"]), int(p["size"]), str(p["type"])) for p in parts]


def check_copy(source: str, target: str, parts: tuple[Part, ...], table: bool) -> str:
    """Untimed: whether ``target`` holds the source's partitions (and table); a finding per
    partition that is not byte-identical."""
    refresh_partitions(target)
    findings = []
    if table and _table(source) != _table(target):
        findings.append("BROKEN: partition table differs")
    for p in parts:
        src, dst = part_dev(source, p.number), part_dev(target, p.number)
        if not Path(dst).exists():
            findings.append(f"BROKEN: no p{p.number} on the target")
            continue
        cmp = subprocess.run(["cmp", src, dst], capture_output=True, text=True, check=False)
        if cmp.returncode == 0:
            continue
        where = cmp.stdout.strip().rsplit(":", 1)[-1].strip() or cmp.stderr.strip()
        fsck = subprocess.run([*FSCK[p.fstype], dst], capture_output=True, check=False)
        verdict = "clean" if fsck.returncode == 0 else f"FAILS (exit {fsck.returncode})"
        findings.append(f"p{p.number} differs ({where}); `{' '.join(FSCK[p.fstype])}` {verdict}")
    return "; ".join(findings) if findings else "identical"


def allocated(path: Path) -> int:
    """Bytes a (sparse) file holds on the host: what was written to a discarded target."""
    return path.stat().st_blocks * 512


def image_bytes(paths: list[Path]) -> int:
    """Bytes files (or every file under folders) take on the host (sparse files: their data)."""
    total = 0
    for path in paths:
        files = [q for q in path.rglob("*") if q.is_file()] if path.is_dir() else [path]
        total += sum(allocated(q) for q in files if q.exists())
    return total
