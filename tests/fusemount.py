"""Start a test FUSE filesystem (tests/faultfile.py, tests/directfuse.py) in a process of its own
and unmount it again: the process prints "ready" once mounted, and runs until unmounted."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def served(module: str, args: Sequence[str], mountpoint: Path) -> Iterator[None]:
    """``python -m module *args`` mounted on ``mountpoint`` for the block; unmounted after."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            _, err = proc.communicate()
            raise RuntimeError(f"{module} did not mount {mountpoint}: {err.strip()}")
        yield
    finally:
        if os.path.ismount(mountpoint):
            subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, check=False)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
