"""The CLI imports the group of the command it runs, not every group (cli/__init__.py GROUPS):
the table must name exactly what each module registers, a command must still parse as before,
and `clonebay list` must not pull in the image engine or the ciphers. Each import check runs in
a fresh interpreter, since this one has imported everything long ago."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from clonebay import cli


def _registered(group: str) -> set[str]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    importlib.import_module(f"clonebay.cli.{group}").register(sub)
    return set(sub.choices)


@pytest.mark.parametrize("group", sorted(cli.GROUPS))
def test_the_table_names_what_each_group_registers(group: str) -> None:
    assert _registered(group) == set(cli.GROUPS[group])


def test_every_command_is_in_one_group_only() -> None:
    commands = [c for names in cli.GROUPS.values() for c in names]
    assert len(commands) == len(set(commands))


def _loaded(argv: list[str]) -> list[str]:
    """The clonebay modules a fresh interpreter holds after parsing ``argv``."""
    code = (
        "import json, sys; from clonebay.cli import build_parser;"
        f" build_parser({argv!r}).parse_args({argv!r});"
        " print(json.dumps(sorted(m for m in sys.modules if m.startswith('clonebay'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(done.stdout))


def test_list_imports_neither_the_engine_nor_the_ciphers_nor_other_groups() -> None:
    loaded = _loaded(["list", "--json"])
    assert "clonebay.cli.disks" in loaded
    # cli.fixup is the one other group it holds: clone's post-copy options come from there
    others = {f"clonebay.cli.{g}" for g in cli.GROUPS} - {
        "clonebay.cli.disks",
        "clonebay.cli.fixup",
    }
    heavy = {"clonebay.engine.inspect", "clonebay.fs.probe", "clonebay.fs.keyring", "argon2"}
    assert not (others | heavy) & set(loaded), sorted((others | heavy) & set(loaded))


def test_options_before_the_command_still_find_its_group() -> None:
    args = cli.build_parser(["-v", "verify", "x.image"]).parse_args(["-v", "verify", "x.image"])
    assert args.command == "verify" and args.verbose


def test_help_and_unknown_commands_see_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser(["--help"]).parse_args(["--help"])
    shown = capsys.readouterr().out
    assert all(c in shown for names in cli.GROUPS.values() for c in names), shown
    with pytest.raises(SystemExit) as exited:
        cli.build_parser(["lsit"]).parse_args(["lsit"])
    assert exited.value.code == 2
    assert "make-stick" in capsys.readouterr().err  # argparse lists every choice
