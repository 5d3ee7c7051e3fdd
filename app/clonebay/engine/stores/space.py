"""Room on a store: the free space of a folder, and the check before a save.

A save is refused up front when the store's free space is less than the data in use on the
source: the most the image can take (LZ4 frames that do not shrink are stored raw, so an image
is never larger than the data plus its small headers). A store that fills up anyway is caught
by the writer (imaging/imagedir.py: ENOSPC, EDQUOT, EFBIG) and the save removes its image.
"""

from __future__ import annotations

import os
from pathlib import Path

from clonebay.errors import StoreFullError
from clonebay.units import human_size


def free_bytes(path: str) -> int:
    """Free space for new files in the folder of ``path`` (the nearest existing parent)."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    info = os.statvfs(folder)
    return info.f_bavail * info.f_frsize


def check_room(path: str, estimate: int) -> None:
    """Refuse a save whose estimated image does not fit the free space, before it starts."""
    free = free_bytes(path)
    if estimate > free:
        raise StoreFullError(
            f"{path}: {human_size(free)} free, and the image is estimated at up to"
            f" {human_size(estimate)} (the data in use, before compression): make room, pick"
            " another store, or pass --no-space-check to try anyway; nothing was written"
        )
