"""``clonebay job FILE|URL``: run an unattended job file (clonebay.engine.jobfile).

The job's disks are named by serial, model, WWN or by-id link; they are looked up among the
machine's disks (waiting up to ``--wait`` seconds for them to appear, as USB disks and HBAs take
a while at boot), then the job runs as the matching ``clonebay clone|save|restore`` command line
would, with the same guards, progress output and exit codes.
"""

from __future__ import annotations

import argparse
import sys
import time

from clonebay.engine.jobfile import Job, command_line, parse_job, read_job_text, resolve
from clonebay.errors import ClonebayError


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


def _cmd_job(args: argparse.Namespace) -> int:
    from clonebay.cli import build_parser

    job = parse_job(read_job_text(args.file), origin=args.file)
    source, target = _resolve_waiting(job, args.wait)
    argv = command_line(job, source, target)
    if args.dry_run and "--dry-run" not in argv:
        argv.append("--dry-run")
    if args.json:
        argv.append("--json")
    print(
        f"job {args.file}: {job.job} {job.source} ({source}) -> {job.target} ({target})\n"
        f"  running: clonebay {' '.join(argv)}",
        file=sys.stderr,
        flush=True,
    )
    inner = build_parser().parse_args(argv)
    code: int = inner.func(inner)
    return code


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``job`` to the ``clonebay`` parser."""
    p = sub.add_parser("job", help="run an unattended job file (TOML; see docs/live.md)")
    p.add_argument("file", help="job file path or http(s):// URL")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for the job's disks to appear (default: do not wait)",
    )
    p.add_argument("--dry-run", action="store_true", help="show the plan and write nothing")
    p.add_argument("--json", action="store_true", help="JSON-lines progress and result")
    p.set_defaults(func=_cmd_job)
