"""What a save's checkpoint and a clone's journal share: how often they are taken, and which
reads are left after one.

Both record where pass 1 stood as a region (a partition, or an area) and the offset in it up to
which every chunk is durable; the reads of the regions before it, and of that region before the
offset, are done. Reads are cut at chunk-aligned boundaries, so none straddles the offset.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from clonebay.engine.pipeline import ReadTask

# seconds between two checkpoints (CLONEBAY_CHECKPOINT_EVERY: 0 in tests, after every chunk)
CHECKPOINT_EVERY = float(os.environ.get("CLONEBAY_CHECKPOINT_EVERY", "5"))


def reads_after(
    tasks: Iterable[ReadTask], done: set[str], region: str, offset: int
) -> Iterator[ReadTask]:
    """``tasks`` without those of the ``done`` regions and those of ``region`` before
    ``offset``."""
    for task in tasks:
        if task.region in done or (task.region == region and task.offset < offset):
            continue
        yield task
