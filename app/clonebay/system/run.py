"""The one way clonebay runs an external program.

Every call takes an argv list (never a shell string), runs with LC_ALL=C so that output parses the
same everywhere, is logged with its duration, and raises CommandError with the program's last
stderr lines when it fails. Tools are looked up through system/tools.py first, so a missing program
is reported as ToolMissingError naming the Debian package to install.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Mapping, Sequence

from clonebay.errors import CommandError
from clonebay.system.tools import require

log = logging.getLogger(__name__)


def _environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input_bytes: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    ok_codes: Sequence[int] = (0,),
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` and return the completed process (stdout and stderr as bytes).

    Raises CommandError when the exit status is not in ``ok_codes`` and ``check`` is true.
    """
    args = [require(argv[0]), *argv[1:]]
    started = time.monotonic()
    proc = subprocess.run(
        args,
        input=input_bytes,
        capture_output=True,
        env=_environment(env),
        timeout=timeout,
        check=False,
        stdin=None if input_bytes is not None else subprocess.DEVNULL,
    )
    log.debug("ran %s -> %d in %.2fs", " ".join(args), proc.returncode, time.monotonic() - started)
    if check and proc.returncode not in ok_codes:
        raise CommandError(list(args), proc.returncode, proc.stderr.decode(errors="replace"))
    return proc


def output(
    argv: Sequence[str],
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    ok_codes: Sequence[int] = (0,),
) -> str:
    """Run ``argv`` and return its stdout as text."""
    proc = run(argv, check=check, env=env, timeout=timeout, ok_codes=ok_codes)
    return proc.stdout.decode(errors="replace")


def spawn(argv: Sequence[str]) -> None:
    """Start ``argv`` and do not wait for it (a notification: nothing depends on it); its
    failure to start is logged, never raised."""
    try:
        subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        log.warning("could not start %s: %s", " ".join(argv), exc)
    else:
        log.debug("started %s", " ".join(argv))
