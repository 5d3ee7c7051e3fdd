"""Jobs killed on purpose (``kill -9``) at a chosen point, for the ``--resume`` tests: the CLI
started with a checkpoint after every chunk, watched until a condition on its state files holds,
then killed; and the conditions on a clone's target journal (engine/target/journal.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.edgedisks import CLONEBAY

JOURNAL_RECORD = 35  # bytes per written run in a clone's journal (journal.RECORD.size)


def run_job(*args: str) -> subprocess.Popen[str]:
    """The CLI, started, checkpointing after every chunk (CLONEBAY_CHECKPOINT_EVERY=0)."""
    env = {**os.environ, "LC_ALL": "C", "CLONEBAY_CHECKPOINT_EVERY": "0"}
    return subprocess.Popen(
        [str(CLONEBAY), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def kill_when(proc: subprocess.Popen[str], ready: Callable[[], bool], what: str) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; fails when it ends first or in 120 s."""
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None, f"the job ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} in 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def journal_state(folder: Path) -> dict[str, object]:
    """The state of the clone journal in the state folder ``folder`` ({} when none is read)."""
    for path in folder.glob("clone-*.json"):
        try:
            return json.loads(path.read_bytes())["state"]  # type: ignore[no-any-return]
        except (OSError, ValueError, KeyError):
            return {}
    return {}


def clone_reached(folder: Path, runs: int | str) -> bool:
    """Whether the target's journal holds ``runs`` written runs (or is at that stage)."""
    state = journal_state(folder)
    if isinstance(runs, str):
        return state.get("stage") == runs
    written = list(folder.glob("clone-*.written"))
    return (
        state.get("stage") == "copy"
        and bool(written)
        and written[0].stat().st_size >= runs * JOURNAL_RECORD
    )
