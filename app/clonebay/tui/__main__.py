"""``python -m clonebay.tui [--image-dir DIR] [DISK ...]``: the TUI on this machine's disks plus
the image files named (what the tmux test and ``make demo`` start)."""

from __future__ import annotations

import sys

from clonebay.tui.app import main

if __name__ == "__main__":
    sys.exit(main())
