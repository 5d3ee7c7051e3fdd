"""What ``clonebay`` alone imports before the TUI's first screen.

The live system's tty1 starts ``clonebay`` with no command at boot, under TCG in the tests, where
each module imported before the first screen costs time (docs/live.md, Boot time): the command
groups and the engine load later, on first use. These run a fresh interpreter and read its
``sys.modules``, so an eager import that creeps back in fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys

GROUPS = ("disks", "images", "job", "net", "browse", "stores", "stick", "fixup", "many")
ENGINE_AND_COMMANDS = (
    "clonebay.engine",
    "clonebay.tui.services",
    "clonebay.tui.flows",
    "clonebay.system.smart",  # the disk pickers' health column: loaded with them
    *(f"clonebay.cli.{group}" for group in GROUPS),
)


def loaded_after(code: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``code`` in a fresh interpreter (stdin not a terminal); its clonebay modules."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.stdout, done.stderr
    modules = json.loads(done.stdout.splitlines()[-1])
    return done, [m for m in modules if m.startswith("clonebay")]


def test_the_tui_module_loads_no_engine_and_no_command_groups() -> None:
    done, modules = loaded_after("import clonebay.tui.app")
    assert done.returncode == 0, done.stderr
    assert "clonebay.tui.screens.home" in modules  # the check reads real module names
    assert not [m for m in modules if m.startswith(ENGINE_AND_COMMANDS)], modules


def test_clonebay_alone_without_a_terminal_refuses_before_loading_the_commands() -> None:
    done, modules = loaded_after("import sys, clonebay.cli\nrc = clonebay.cli.main([])\nprint(rc)")
    assert done.stdout.splitlines()[0] == "2"
    assert "the TUI needs a terminal" in done.stderr
    assert "clonebay.cli" in modules
    assert not [m for m in modules if m.startswith(ENGINE_AND_COMMANDS)], modules


def test_a_command_still_loads_its_group() -> None:
    done, modules = loaded_after(
        "import clonebay.cli\n"
        "try:\n    clonebay.cli.main(['--version'])\nexcept SystemExit:\n    pass"
    )
    assert "clonebay " in done.stdout
    assert "clonebay.cli.images" in modules
