"""One read, many targets: several target paths fed from the same data, each on its own.

A technician with a USB hub writes four disks from one read of the source. Each target keeps
everything the one target path gives a single target (engine/target/path.py): its own Plan and
checks, wipe, ordered writer thread, held tables, flush, read-back verify, fixups and count
check, and its own outcome. What the fan-out adds:

- all refusals of all targets come before the first write to any of them (``open_paths``):
  each target's guard and plan checks, and the targets against each other (the same disk
  twice, a partition of another target, a loop device over another target: checks.py);
- a feeder hands each piece of data to every live target (``each``); the same buffer goes to
  all of them (a pipeline buffer kept by a lease, or an immutable bytes object), so memory does
  not grow with the number of targets: a slow target's full queue slows the reader down;
- a target that fails (its write error surfaces at its next ``put``, ``drain`` or ``finish``)
  is recorded with its error, which says that it is incomplete, and closed; the others go on.
  The read stops only when no target is left (``NoTargetLeftError``) or the source fails
  (``fail_all`` gives every live target the source's error);
- ``finish`` runs each target's end (held areas, flush, verify, fixups) in a thread of its own:
  each target is another disk, so their read-backs overlap.

The outcome of each target is a TargetOutcome, in the order the targets were given.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from clonebay.engine.target import checks
from clonebay.engine.target.job import TargetJob, TargetResult
from clonebay.engine.target.journal import Journal
from clonebay.engine.target.path import TargetPath
from clonebay.errors import ClonebayError, DeviceError
from clonebay.model import Extent, Progress

ProgressSink = Callable[[Progress], None]
StateSink = Callable[[str, str], None]  # (target, state): "writing", "finishing", "done", "failed"


@dataclass
class TargetOutcome:
    """How one target of a job ended: ``error`` is None when it is complete (and verified,
    when the job verifies); otherwise the error says what stopped it and that it is
    incomplete."""

    target: str
    error: ClonebayError | None = None
    written: int = 0  # bytes written
    verified: int = 0  # bytes read back and compared
    verified_chunks: int = 0
    done: list[str] = field(default_factory=list)  # what followed the data (tables, fixups)
    warnings: list[str] = field(default_factory=list)
    touched: bool = False  # something was written to it
    unreadable: tuple[Extent, ...] = ()  # --rescue: source ranges left unreadable (zeros here)
    rescue_map: str = ""  # --rescue: the map of the source's reads

    @property
    def ok(self) -> bool:
        return self.error is None


class NoTargetLeftError(Exception):
    """Every target failed: the feeder stops reading (each error is in its outcome)."""


def copy_error(exc: ClonebayError) -> ClonebayError:
    """The same error as another object, so each target's message can get its own note
    (CommandError's __init__ takes other arguments than its message: bypassed)."""
    twin = type(exc).__new__(type(exc), exc.message)
    twin.__dict__.update(exc.__dict__)
    twin.args = exc.args
    return twin


class TargetsMeter:
    """The targets' progress as one: per stage (write, verify), the mean of their done and
    total bytes, the mean rate and the longest time left. One target passes straight through."""

    def __init__(self, report: ProgressSink | None, targets: Sequence[str]) -> None:
        self.report = report
        self.count = len(targets)
        self.last: dict[tuple[str, str], Progress] = {}
        self.lock = threading.Lock()

    def of(self, target: str) -> ProgressSink | None:
        if self.report is None or self.count == 1:
            return self.report
        return lambda p: self._add(target, p)

    def _add(self, target: str, p: Progress) -> None:
        stage = "verify" if p.region == "verify" else "write"
        with self.lock:
            self.last[(stage, target)] = p
            seen = [q for (s, _), q in self.last.items() if s == stage]
            etas = [q.eta_seconds for q in seen if q.eta_seconds is not None]
            mean = Progress(
                p.region,
                sum(q.done for q in seen) // len(seen),
                sum(q.total for q in seen) // len(seen),
                sum(q.bytes_per_second for q in seen) / len(seen),
                max(etas) if etas else None,
                p.bottleneck,
            )
            assert self.report is not None
            self.report(mean)


def open_paths(
    jobs: Sequence[TargetJob],
    *,
    progress: ProgressSink | None = None,
    cancel: threading.Event | None = None,
    report_writes: bool = True,
    journals: Sequence[Journal | None] = (),
) -> list[TargetPath]:
    """Check every target, alone and against the others, then open them all; nothing is
    written. A refusal of any target refuses the job (and removes new files it created)."""
    for job in jobs:
        checks.preflight(job.source, job.target, job.allow_mounted_source)
        checks.check_job(job, checks.target_size(job.target, job.needed))
    checks.check_distinct([job.target for job in jobs])
    meter = TargetsMeter(progress, [job.target for job in jobs])
    opened: list[TargetPath] = []
    try:
        for i, job in enumerate(jobs):
            opened.append(
                TargetPath(
                    job,
                    progress=meter.of(job.target),
                    cancel=cancel,
                    report_writes=report_writes,
                    journal=journals[i] if i < len(journals) else None,
                )
            )
    except BaseException:
        for path in opened:
            path.close()
            if path.dev.fresh:
                checks.remove_new_file(path.job.target)
        raise
    return opened


class FanOut:
    """The live targets of a job, fed together; failed ones are set aside with their error."""

    def __init__(self, paths: Sequence[TargetPath], on_state: StateSink | None = None) -> None:
        self.paths = list(paths)
        self.live = list(paths)
        self.errors: dict[int, ClonebayError] = {}
        self.results: dict[int, TargetResult] = {}
        self.on_state = on_state
        self.lock = threading.Lock()  # finish threads record their ends concurrently

    def __enter__(self) -> FanOut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for path in self.paths:
            path.close()

    def _state(self, path: TargetPath, state: str) -> None:
        if self.on_state is not None:
            self.on_state(path.job.target, state)

    def begin(self) -> None:
        """Wipe each target and start its writer."""
        self.each(TargetPath.begin)
        for path in self.live:
            self._state(path, "writing")

    def each(self, action: Callable[[TargetPath], None]) -> None:
        """``action`` on every live target; one that raises is recorded and closed.
        NoTargetLeftError when none is left."""
        for path in list(self.live):
            try:
                with path.writing():
                    action(path)
            except ClonebayError as exc:
                self._fail(path, exc)
        if not self.live:
            raise NoTargetLeftError("every target failed")

    def run(self, feed: Callable[[], None]) -> None:
        """Wipe every target, run ``feed`` (it hands the data to the targets), then finish the
        live ones. A source error or a cancel (ClonebayError, OSError) reaches every live
        target as its own error; feeding stops early when no target is left."""
        try:
            self.begin()
            feed()
        except NoTargetLeftError:
            pass
        except (ClonebayError, OSError) as exc:
            self.fail_all(exc)
        if self.live:
            self.finish()

    def fail_all(self, exc: BaseException) -> None:
        """The source failed (or the job was cancelled): every live target stops, with that
        error and its own note that it is incomplete."""
        if isinstance(exc, ClonebayError):
            error = exc
        elif isinstance(exc, OSError):
            error = DeviceError(f"reading the source failed: {exc.strerror or exc}")
        else:
            raise exc
        for path in list(self.live):
            try:
                with path.writing():
                    raise copy_error(error)
            except ClonebayError as own:
                self._fail(path, own)

    def _fail(self, path: TargetPath, exc: ClonebayError) -> None:
        with self.lock:
            self.errors[self.paths.index(path)] = exc
            self.live.remove(path)
        path.close()
        self._state(path, "failed")

    def finish(self) -> None:
        """Each live target's end (held areas, flush, verify, fixups, count check), in
        parallel threads; every result or error is kept."""
        unexpected: list[BaseException] = []

        def end(path: TargetPath) -> None:
            self._state(path, "finishing")
            try:
                with path.writing():
                    result = path.finish()
                with self.lock:
                    self.results[self.paths.index(path)] = result
            except ClonebayError as exc:
                self._fail(path, exc)
                return
            except BaseException as exc:  # a bug: raised in the caller's thread below
                with self.lock:
                    unexpected.append(exc)
                return
            self._state(path, "done")

        threads = [
            threading.Thread(target=end, args=(p,), name="clonebay-finish", daemon=True)
            for p in list(self.live)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if unexpected:
            raise unexpected[0]

    def outcomes(
        self, notes: Callable[[TargetPath], Sequence[str]] = lambda p: ()
    ) -> list[TargetOutcome]:
        """Every target's outcome, in the order given; ``notes``: warnings of a target's plan."""
        out = []
        for i, path in enumerate(self.paths):
            result = self.results.get(i)
            outcome = TargetOutcome(path.job.target, self.errors.get(i), touched=path.touched)
            if result is not None and outcome.error is None:
                outcome.written = result.written_bytes
                outcome.verified = sum(result.verified.values())
                outcome.verified_chunks = result.verified_chunks
                outcome.done = list(result.done)
                outcome.warnings = list(result.warnings)
            else:
                outcome.written = sum(path.written.values())
            outcome.warnings += list(notes(path))
            out.append(outcome)
        return out
