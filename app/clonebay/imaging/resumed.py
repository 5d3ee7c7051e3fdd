"""Taking up an interrupted save at its checkpoint (imaging/checkpoint.py): what was written
after the checkpoint goes, and the dedup table is built again from the records kept.

The writer stores a chunk once and points later identical chunks at that frame (writer.py); a
resumed writer must know every frame the kept records name, or it would store again a chunk the
uninterrupted save deduplicated, and the two images would differ. Records name their frame's
pack, offset, stored length, codec and hash: enough to rebuild the table exactly, first
occurrence first, as the writer built it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from clonebay.imaging import spec
from clonebay.imaging.checkpoint import index_records
from clonebay.imaging.imagedir import fsync_dir, os_call
from clonebay.imaging.manifest import RegionEntry

Dedup = dict[tuple[bytes, int], tuple[int, int, int, int]]  # (hash, length) -> frame


def drop_later_files(image: Path, keep_index: set[str], first_later_pack: int) -> None:
    """Remove the index files of regions that ended after the checkpoint and the packs begun
    after it (their records and frames are written again)."""
    for folder in (spec.INDEX_DIR, spec.PACKS_DIR):
        later = [
            path
            for path in sorted((image / folder).iterdir())
            if (path.name not in keep_index if folder == spec.INDEX_DIR
                else _pack_number(path) >= first_later_pack)
        ]  # fmt: skip
        for path in later:
            os_call(path, path.unlink)
        if later:
            fsync_dir(image / folder)


def _pack_number(path: Path) -> int:
    stem = path.name.removesuffix(".pack")
    return int(stem) if stem.isdigit() else -1


def rebuild_dedup(image: Path, regions: Iterable[RegionEntry], open_records: bytes) -> Dedup:
    """The writer's dedup table for the records the checkpoint keeps."""
    table: Dedup = {}
    bodies = [index_records(image, entry) for entry in regions] + [open_records]
    for body in bodies:
        for (
            _,
            length,
            pack,
            pack_offset,
            stored,
            codec,
            flags,
            _,
            digest,
        ) in spec.RECORD.iter_unpack(body):
            if not flags:
                table.setdefault((digest, length), (pack, pack_offset, stored, codec))
    return table
