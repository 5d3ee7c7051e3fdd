"""``python -m clonebay`` is the same as the ``clonebay`` command."""

from clonebay.cli import main

raise SystemExit(main())
