"""The ``clonebay`` command: argv -> one job. ``clonebay`` alone will start the TUI.

Every subcommand returns an exit code; every ClonebayError becomes its message on stderr (or a
JSON object with ``--json``) and its exit code, so scripts can tell a refusal from a failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from clonebay import __version__
from clonebay.errors import ClonebayError, UsageError
from clonebay.report import disk_json, disks_json, format_disk_report, format_disk_table


def _cmd_list(args: argparse.Namespace) -> int:
    from clonebay.system.udev import list_disks

    disks = list_disks()
    if args.json:
        print(json.dumps(disks_json(disks), indent=2))
    else:
        print(format_disk_table(disks))
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from clonebay.engine.inspect import inspect_disk

    report = inspect_disk(args.disk)
    if args.json:
        print(json.dumps(disk_json(report), indent=2))
    else:
        print(format_disk_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clonebay",
        description="Clone disks, save and restore images, copying only the blocks in use.",
    )
    parser.add_argument("--version", action="version", version=f"clonebay {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command run")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list the disks of this machine")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("probe", help="show a disk's partitions, filesystems and copy methods")
    p.add_argument("disk", help="a disk device, a /dev/disk/by-id name, or a disk image file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_probe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    as_json = bool(getattr(args, "json", False))
    try:
        if args.command is None:
            raise UsageError("the TUI is not built yet: give a command (see clonebay --help)")
        code: int = args.func(args)
        return code
    except ClonebayError as exc:
        if as_json:
            error = {"error": exc.title, "message": exc.message, "exit_code": exc.exit_code}
            print(json.dumps(error), file=sys.stderr)
        else:
            print(f"clonebay: {exc.title.lower()}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("clonebay: cancelled", file=sys.stderr)
        return 9
