"""The processes and kernel state behind a mount: starting our FUSE daemons, waiting for FUSE
drivers to exit (system/procs.py), and asking the kernel what is mounted.

A FUSE daemon of ours (daemon.py) runs in its own session so that it outlives the command that
started it; it tells the starter that its mount is live by writing ``ready`` to a pipe, and the
starter blocks on that pipe rather than on a clock. Waiting for a process to end uses a pidfd.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from clonebay.errors import ClonebayError
from clonebay.system.mounts import MOUNTINFO, parse_mountinfo
from clonebay.system.procs import wait_pidfds

EXIT_TIMEOUT = 120.0  # seconds for a FUSE daemon to write back and exit after its unmount


class ViewError(ClonebayError):
    """The FUSE view or a filesystem driver could not be started or stopped."""

    title = "Browse failed"
    exit_code = 4


def child_env() -> dict[str, str]:
    """Our environment, with this package importable (``-m clonebay...`` from a checkout)."""
    env = dict(os.environ)
    app = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (app, env.get("PYTHONPATH", "")) if p)
    return env


def start_daemon(args: Sequence[str], log_path: Path, secrets: bytes = b"") -> int:
    """Start ``python -m clonebay.browse.daemon --ready-fd N ARGS`` in its own session, its
    output appended to ``log_path``; return its pid once its mount is live. ``secrets`` (keys
    for a locked volume) go to its standard input, which it reads to the end first."""
    read_end, write_end = os.pipe()
    argv = [sys.executable, "-m", "clonebay.browse.daemon", "--ready-fd", str(write_end), *args]
    try:
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if secrets else subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                pass_fds=(write_end,),
                start_new_session=True,
                env=child_env(),
            )
    finally:
        os.close(write_end)
    if proc.stdin is not None:
        with proc.stdin:
            proc.stdin.write(secrets)
    with os.fdopen(read_end, "rb") as ready:
        answer = ready.read(6)
    if answer != b"ready\n":
        proc.wait()
        lines = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise ViewError(
            f"{args[0]} view did not start (exit status {proc.returncode}):\n  "
            + "\n  ".join(lines)
        )
    return proc.pid


def wait_for_exit(pids: Sequence[int], timeout: float = EXIT_TIMEOUT) -> None:
    """Block until every process in ``pids`` has exited (its pidfd becomes readable)."""
    fds = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds.append(os.pidfd_open(pid))
    try:
        what = f"a filesystem process ({', '.join(map(str, pids))})"
        wait_pidfds(fds, timeout, what + "; is a file still open in it?")
    finally:
        for fd in fds:
            os.close(fd)
        for pid in pids:  # a daemon this process started must also be reaped
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def mounted_at(path: str | os.PathLike[str]) -> bool:
    """Is something mounted exactly at ``path``? (/proc/self/mountinfo)"""
    real = os.path.realpath(path)
    with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
        return any(e.mountpoint == real for e in parse_mountinfo(f.read()))
