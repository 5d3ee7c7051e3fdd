"""Timing external commands fairly: caches dropped before each run, the page cache flushed after.

A run is one command or a pipeline of commands (``a | b > file``), started without a shell. Its
wall time is measured twice: until the last process exits, and until a following ``sync`` has
written everything the run left in the page cache. The second is the figure to compare: clonebay
fsyncs its image and target, while partclone, lz4 and dd leave gigabytes of dirty pages behind
on a machine with this much memory, and would otherwise look faster than the disk allows. The
CPU seconds (user + system) of all processes of the run come from ``RUSAGE_CHILDREN``.

Memory state matters on a VM with virtio-balloon free page reporting (this bench machine, a
Firecracker guest): memory freed by ``drop_caches`` is handed back to the host within seconds,
and every page the guest then touches again (page cache included) costs a host fault, about
2.5-3.5 CPU-s per GiB. A tool that starts right after a big ``drop_caches`` finds warm memory,
one that starts 20 s later finds cold memory: measured, clonebay restore of 2 GB took 2.6 s warm
and 8-10 s cold. So ``Pace`` waits a fixed time after dropping caches, until the freed memory
has gone back to the host, and every run starts from the same cold state. Tools doing buffered
I/O pay this tax, O_DIRECT tools do not; bare metal has no such tax.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import resource
import shlex
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MB = 1e6
Argv = Sequence[str]


def drop_caches() -> None:
    """``sync; echo 3 > /proc/sys/vm/drop_caches`` (root only; elsewhere a no-op)."""
    os.sync()
    if os.geteuid() == 0:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


@dataclass(frozen=True)
class Command:
    """A pipeline of argvs; the last one's stdout goes to ``stdout_file`` when given."""

    stages: tuple[tuple[str, ...], ...]
    stdout_file: Path | None = None

    @classmethod
    def of(cls, *stages: Argv, stdout_file: Path | None = None) -> Command:
        return cls(tuple(tuple(s) for s in stages), stdout_file)

    def text(self) -> str:
        line = " | ".join(shlex.join(s) for s in self.stages)
        return f"{line} > {shlex.quote(str(self.stdout_file))}" if self.stdout_file else line


@dataclass
class Sample:
    """One timed run."""

    exit_seconds: float
    synced_seconds: float
    cpu_seconds: float
    other_cpu_seconds: float = 0.0  # CPU time of everything else (kernel writeback included)
    busy_before: float = 0.0  # share of the CPUs other processes used just before the run
    stdout: str = ""
    stderr: str = ""


def busy_cpu_seconds() -> float:
    """CPU seconds all CPUs have spent busy since boot (everything but idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


QUIET = 0.15  # other processes may use this share of the CPUs when a run starts


def wait_quiet(max_busy: float = QUIET, timeout: float = 90.0) -> float:
    """Wait until other processes use under ``max_busy`` of the CPUs for two seconds in a row
    (other jobs on a shared machine skew timings), at most ``timeout`` seconds; returns the last
    busy fraction seen."""
    cpus = os.cpu_count() or 1
    deadline = time.monotonic() + timeout
    quiet = 0
    busy = 0.0
    while time.monotonic() < deadline and quiet < 2:
        before = busy_cpu_seconds()
        time.sleep(1.0)  # the sampling interval of the CPU-use measurement
        busy = (busy_cpu_seconds() - before) / cpus
        quiet = quiet + 1 if busy < max_busy else 0
    return busy


@dataclass(frozen=True)
class Pace:
    """How each run is started: caches dropped, then ``settle_seconds`` of quiet (waiting at
    most ``max_wait`` seconds for other processes to leave the CPUs idle)."""

    settle_seconds: float = 20.0
    max_wait: float = 90.0

    def before_run(self) -> float:
        """Drop caches and wait; returns the share of the CPUs other processes used last."""
        drop_caches()
        started = time.monotonic()
        busy = wait_quiet(timeout=self.max_wait)
        left = self.settle_seconds - (time.monotonic() - started)
        if left > 0:
            time.sleep(left)  # freed memory goes back to the host gradually (see above)
        return busy


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_pipeline(cmd: Command, log: Path) -> Sample:
    """Run ``cmd`` once (stderr of every stage appended to ``log``); raises on any failure."""
    cpu0, busy0 = _children_cpu(), busy_cpu_seconds()
    started = time.perf_counter()
    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(open(log, "ab"))
        out_file = stack.enter_context(open(cmd.stdout_file, "wb")) if cmd.stdout_file else None
        try:
            prev = None
            for i, argv in enumerate(cmd.stages):
                last = i == len(cmd.stages) - 1
                stdout = (out_file or subprocess.PIPE) if last else subprocess.PIPE
                proc = subprocess.Popen(argv, stdin=prev, stdout=stdout, stderr=err)
                if prev is not None:
                    prev.close()  # the next stage owns the read end now
                prev = proc.stdout if not last else None
                procs.append(proc)
            final = procs[-1]
            text = final.stdout.read().decode(errors="replace") if final.stdout else ""
            codes = [p.wait() for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    exited = time.perf_counter()
    os.sync()
    synced = time.perf_counter()
    if any(codes):
        raise RuntimeError(f"{cmd.text()} exited {codes}; see {log}")
    cpu = _children_cpu() - cpu0
    other = busy_cpu_seconds() - busy0 - cpu
    return Sample(exited - started, synced - started, cpu, max(0.0, other), stdout=text)


@dataclass
class Result:
    """The samples of one method, and what the method reported."""

    name: str
    command: str
    samples: list[Sample] = field(default_factory=list)
    note: str = ""

    def median(self, what: Callable[[Sample], float]) -> float:
        return statistics.median(what(s) for s in self.samples)

    @property
    def seconds(self) -> float:
        return self.median(lambda s: s.synced_seconds)

    @property
    def exit_seconds(self) -> float:
        return self.median(lambda s: s.exit_seconds)

    @property
    def cpu(self) -> float:
        return self.median(lambda s: s.cpu_seconds)

    @property
    def other_cpu(self) -> float:
        return self.median(lambda s: s.other_cpu_seconds)

    def spread(self) -> str:
        times = sorted(s.synced_seconds for s in self.samples)
        return f"{times[0]:.1f}-{times[-1]:.1f}" if len(times) > 1 else f"{times[0]:.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def machine() -> str:
    """One line about this machine: date, CPU count and model, memory, kernel."""
    mem = 0
    model = platform.processor() or "?"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"{when}; nproc {os.cpu_count()} ({model}); {mem / (1 << 30):.1f} GiB RAM;"
        f" Linux {platform.release()}"
    )


def tool_versions(argvs: Sequence[Argv]) -> list[str]:
    """First line of each ``tool --version``-like command's output."""
    out = []
    for argv in argvs:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        text = (proc.stdout or proc.stderr).strip().splitlines()
        out.append(text[0].strip() if text else f"{argv[0]}: ?")
    return out


def git_revision(repo: Path) -> str:
    """HEAD of ``repo`` and whether its app/ has uncommitted or untracked files."""
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--", "app"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return head + (" + uncommitted changes in app/" if dirty else "")
