"""``clonebay job FILE|URL``: run an unattended job file (clonebay.cli.jobfile).

The job's disks are named by serial, model, WWN or by-id link; they are looked up among the
machine's disks (waiting up to ``--wait`` seconds for them to appear, as USB disks and HBAs take
a while at boot), then the job runs as the matching ``clonebay clone|save|restore`` command line
would, with the same guards, progress output and exit codes.

A clone or restore job overwrites a disk, so somebody must have said yes: the job file's
``yes = true``, written by the technician who named the target, or ``--yes`` here. Without
either it asks on a terminal, and without a terminal (the boot-time job) it is refused at once,
before waiting for any disk.
"""

from __future__ import annotations

import argparse
import sys
import time

from clonebay.cli.confirm import add_yes, describe_target
from clonebay.cli.jobfile import Job, command_line, parse_job, read_job_text, resolve
from clonebay.cli.stores import run_command
from clonebay.errors import ClonebayError, UsageError


def _resolve_waiting(job: Job, wait: float) -> tuple[str, str]:
    from clonebay.system.udev import list_disks

    deadline = time.monotonic() + wait
    while True:
        try:
            return resolve(job, list_disks())
        except ClonebayError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(2)  # a disk that is still being probed by its driver; nothing to poll on


def _confirmed(job: Job, args: argparse.Namespace) -> bool:
    """True when nobody needs to be asked; UsageError when nobody can be."""
    if not job.needs_confirmation or args.dry_run or args.yes or job.yes:
        return True
    if sys.stdin.isatty() and sys.stderr.isatty():
        return False  # the clone or restore asks, once it has its plan
    raise UsageError(
        f"the job file {args.file} overwrites {job.target} and nobody confirmed it: add"
        " `yes = true` to the job file, or run `clonebay job --yes`"
    )


def _cmd_job(args: argparse.Namespace) -> int:
    from clonebay.cli import build_parser

    job = parse_job(read_job_text(args.file), origin=args.file)
    confirmed = _confirmed(job, args)
    source, target = _resolve_waiting(job, args.wait)
    argv = command_line(job, source, target)
    if args.dry_run and "--dry-run" not in argv:
        argv.append("--dry-run")
    if args.yes and "--yes" not in argv:
        argv.append("--yes")
    if args.json:
        argv.append("--json")
    lines = [f"job {args.file}: {job.job} {job.source} ({source}) -> {job.target} ({target})"]
    if confirmed and job.needs_confirmation and not args.dry_run:
        lines.append("  overwriting (confirmed by the job file's yes = true or --yes):")
        lines += [f"    {line}" for line in describe_target(target)]
    lines.append(f"  running: clonebay {' '.join(argv)}")
    print("\n".join(lines), file=sys.stderr, flush=True)
    inner = build_parser(argv).parse_args(argv)
    return run_command(inner)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``job`` to the ``clonebay`` parser."""
    p = sub.add_parser("job", help="run an unattended job file (TOML; see docs/live.md)")
    p.add_argument("file", help="job file path, https:// URL, or http://...#sha256=HEX")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for the job's disks to appear (default: do not wait)",
    )
    p.add_argument("--dry-run", action="store_true", help="show the plan and write nothing")
    add_yes(p)
    p.add_argument("--json", action="store_true", help="JSON-lines progress and result")
    p.set_defaults(func=_cmd_job)
