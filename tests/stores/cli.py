"""Run ``clonebay`` as a technician's script would: a separate process, no terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping


def clonebay(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``clonebay ARGS`` with stdin from /dev/null; ``timeout`` only guards against a hang."""
    return subprocess.run(
        [sys.executable, "-m", "clonebay", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
