"""The ``clonebay`` command: argv -> one job. ``clonebay`` alone will start the TUI.

Every subcommand returns an exit code; every ClonebayError becomes its message on stderr (or a
JSON object with ``--json``) and its exit code, so scripts can tell a refusal from a failure.
Each module of this package registers a group of subcommands (``register(sub)``); a command
imports its own group only (``GROUPS``).

``clonebay`` alone goes straight to the TUI without importing the command groups: tty1 of the
live system starts it so at boot, where every module imported before the first screen costs
time (docs/live.md, Boot time).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence

from clonebay import __version__
from clonebay.cli.common import as_given
from clonebay.errors import ClonebayError, UsageError

# The module of this package that registers each command. A command imports its own group
# only: on a slow machine (a live USB stick, an emulated guest) every module imported costs
# time, and `clonebay list` needs none of the image engine. tests/unit/test_cli_groups.py
# checks this table against what each module registers.
GROUPS: dict[str, tuple[str, ...]] = {
    "disks": ("list", "probe", "clone"),
    "images": ("save", "restore", "verify", "convert", "info"),
    "job": ("job",),
    "net": ("send", "receive"),
    "browse": ("mount", "edit", "umount", "ls", "extract"),
    "stores": ("stores",),
    "stick": ("make-stick",),
    "fixup": ("fixup",),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: with only the group of its command when it names one, with
    every command otherwise (no argv, --help, a command that does not exist)."""
    parser = argparse.ArgumentParser(
        prog="clonebay",
        description="Clone disks, save and restore images, copying only the blocks in use.",
    )
    parser.add_argument("--version", action="version", version=f"clonebay {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command run")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    command = next((a for a in argv or () if not a.startswith("-")), None)
    groups = [g for g, commands in GROUPS.items() if command in commands] or list(GROUPS)
    for group in groups:
        importlib.import_module(f"clonebay.cli.{group}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if not (sys.argv[1:] if argv is None else argv):
        return _tui()
    from clonebay.cli.stores import run_command

    given = sys.argv[1:] if argv is None else argv
    args = build_parser(given).parse_args(given)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    as_json = bool(getattr(args, "json", False))
    try:
        if args.command is None:  # options only, such as -v
            return _tui()
        return run_command(args)
    except ClonebayError as exc:
        message = as_given(args, exc.message)
        if as_json:
            error = {"error": exc.title, "message": message, "exit_code": exc.exit_code}
            print(json.dumps(error), file=sys.stderr)
        else:
            print(f"clonebay: {exc.title.lower()}: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("clonebay: cancelled", file=sys.stderr)
        return 9


def _tui() -> int:
    """``clonebay`` with no command: the TUI, on a terminal only."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        error = UsageError("the TUI needs a terminal: give a command (see clonebay --help)")
        print(f"clonebay: {error.title.lower()}: {error.message}", file=sys.stderr)
        return error.exit_code
    from clonebay.tui.app import run_tui

    return run_tui()
