"""``--rescue``, ``--retries``, ``--mapfile`` and ``--resume`` of ``save`` and ``clone``
(engine/rescue/, engine/resume/), and
the end of a rescued job: each unreadable range listed, exit code 10 ("done with errors")."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clonebay.engine.jobs import RescueOptions

DONE_WITH_ERRORS = 10  # docs/cli.md, Exit codes


def add_rescue_options(p: argparse.ArgumentParser, map_default: str) -> None:
    p.add_argument(
        "--rescue",
        action="store_true",
        help="the source is failing: read what it still gives, the easy data first (failed"
        " reads skip ahead; later passes trim, scrape and retry the bad areas, as GNU ddrescue"
        " does), only the used blocks; what stays unreadable is zeros in the copy and listed"
        " (exit code 10)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        metavar="N",
        help="with --rescue: passes over the bad sectors at the end (default 1)",
    )
    p.add_argument(
        "--mapfile",
        dest="rescue_map",
        default="",
        metavar="FILE",
        help=f"with --rescue: the mapfile, in GNU ddrescue's format (default: {map_default})",
    )


def add_resume_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--resume",
        action="store_true",
        help=f"go on with the {what} that stopped (killed, crashed, power cut, a disk unplugged)"
        " from its last checkpoint, with the same arguments: the same disks are checked by"
        " serial and used blocks, and the result is the one an uninterrupted run gives",
    )


def rescue_options(args: argparse.Namespace) -> RescueOptions | None:
    """The RescueOptions the command line asks for (None without --rescue)."""
    from clonebay.engine import jobs
    from clonebay.errors import UsageError

    if not args.rescue:
        if getattr(args, "resume", False) and (args.rescue_map or args.retries != 1):
            return jobs.RescueOptions(retries=args.retries, map_path=args.rescue_map)
        if args.rescue_map or args.retries != 1:
            raise UsageError("--retries and --mapfile go with --rescue")
        return None
    if not 0 <= args.retries <= 100:
        raise UsageError(f"--retries {args.retries}: give 0 to 100 passes")
    return jobs.RescueOptions(retries=args.retries, map_path=args.rescue_map)
