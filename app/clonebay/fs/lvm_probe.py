"""An LVM2 physical volume as the prober reports it: copied by the used blocks of each logical
volume's filesystem, or whole with the reason.

A PV is mapped natively when its volume group lives on this PV alone and every LV is linear
(lvm_map.refusal). The copy then carries, at their own offsets:

- ``[0, pe_start)``: the label, the metadata area(s) and any bootloader area, byte for byte, so
  the target has the same PV, VG and LV UUIDs and the same metadata history;
- any other metadata area (``pvcreate --pvmetadatacopies 2`` puts one at the end of the PV);
- for each LV, its filesystem's used blocks (probed through the LV's extents with ``inner``, the
  fs prober), mapped through its segments to PV offsets; an LV whose content is raw or unknown
  is carried whole (the engine still skips its zero chunks);

and nothing of the unallocated extents. A PV in no volume group is its label and metadata area.

Copied whole, with the reason: thin pools and thin LVs, snapshots, caches, mirrors and RAID LVs,
a VG spanning several PVs (the others are named), and any label or metadata that does not parse
or does not fit the device (the reason says where).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clonebay.errors import InputError
from clonebay.fs import extents
from clonebay.fs.lvm_label import SECTOR, LvmError, PvLabel, find_label, parse_label
from clonebay.fs.lvm_map import VolumeGroup, build, check_disjoint, pieces, refusal, through
from clonebay.fs.lvm_text import parse_config, read_area
from clonebay.fs.pieced import PiecedSource
from clonebay.model import CopyMethod, Extent, Volume, VolumeState
from clonebay.system.blockdev import ByteSource
from clonebay.units import human_size

FSTYPE = "lvm2-pv"
# An LV in one of these states makes the PV report it (the plan shows it to the technician).
CARRIED_STATES = (
    VolumeState.HIBERNATED,
    VolumeState.NEEDS_RECOVERY,
    VolumeState.ERRORS,
    VolumeState.DIRTY,
)


@dataclass(frozen=True)
class PvContents:
    """A PV's label, the areas that are always copied, and its VG (None: in no VG)."""

    label: PvLabel
    kept: tuple[Extent, ...]
    vg: VolumeGroup | None


def read_pv(src: ByteSource) -> PvContents:
    """Label, metadata areas and the newest VG text of the PV in ``src`` (LvmError if damaged)."""
    head = src.pread(min(4 * SECTOR, src.size), 0)
    number = find_label(head)
    if number is None:
        raise LvmError(f"{src.name}: no LVM2 label in the first 4 sectors")
    label = parse_label(head[number * SECTOR : (number + 1) * SECTOR], number)
    newest: tuple[int, VolumeGroup] | None = None
    for area in label.metadata_areas:
        found = read_area(src, area)
        if found.ignored or not found.text:
            continue
        vg = build(parse_config(found.text, f"LVM metadata area at byte {area.start}"))
        if newest is None or vg.seqno > newest[0]:
            newest = (vg.seqno, vg)
    group = newest[1] if newest else None
    pv = group.pv(label.uuid) if group else None
    if group is not None and pv is None:
        raise LvmError(f"LVM metadata of VG {group.name} does not list this PV ({label.uuid})")
    pe_start = pv.pe_start if pv else label.data_areas[0].start
    if pe_start > src.size:
        raise LvmError(f"LVM: extents start at byte {pe_start}, past the end ({src.size} bytes)")
    head_area = Extent(0, pe_start)
    kept = extents.normalize((head_area, *label.metadata_areas, *label.bootloader_areas))
    return PvContents(label, extents.clip(kept, src.size), group)


def _whole(src: ByteSource, reason: str, notes: tuple[str, ...] = ()) -> Volume:
    used = (Extent(0, src.size),) if src.size else ()
    why = f"LVM physical volume copied whole: {reason}"
    return Volume(FSTYPE, src.size, used, CopyMethod.RAW, VolumeState.UNKNOWN, reason=why,
                  notes=notes)  # fmt: skip


def _vg_note(vg: VolumeGroup) -> str:
    allocated = sum(lv.extent_count for lv in vg.lvs)
    total = sum(pv.pe_count for pv in vg.pvs)
    return (
        f"volume group {vg.name} ({vg.uuid}): {len(vg.lvs)} LVs, extents of"
        f" {human_size(vg.extent_size)}, {allocated} of {total} allocated"
    )


def _lv_note(name: str, size: int, found: Volume) -> str:
    what = found.fstype + (f" {found.label!r}" if found.label else "")
    if found.copy is CopyMethod.NATIVE:
        return f"LV {name}: {human_size(size)}, {what}, {human_size(found.used_bytes)} used"
    return f"LV {name}: {human_size(size)}, {what}, copied whole ({found.reason})"


def _map_lvs(
    src: ByteSource, vg: VolumeGroup, label: PvLabel, inner: Callable[[ByteSource], Volume]
) -> tuple[list[Extent], list[str], list[VolumeState]]:
    pv = vg.pv(label.uuid)
    assert pv is not None  # read_pv checked it
    if pv.pe_start + pv.pe_count * vg.extent_size > src.size:
        raise LvmError(
            f"LVM metadata: {pv.pe_count} extents of {vg.extent_size} bytes from byte"
            f" {pv.pe_start} run past the end of this volume ({src.size} bytes)"
        )
    laid = [(lv, pieces(vg, lv, pv)) for lv in vg.lvs]
    check_disjoint((lv.name, p) for lv, lv_pieces in laid for p in lv_pieces)
    runs: list[Extent] = []
    notes: list[str] = []
    states: list[VolumeState] = []
    for lv, lv_pieces in laid:
        view = PiecedSource(src, lv_pieces, f"{src.name}:{vg.name}/{lv.name}")
        try:
            found = inner(view)
        except InputError as exc:
            found = Volume("unreadable", view.size, (), CopyMethod.RAW, reason=exc.message)
        whole = (Extent(0, view.size),)
        used = extents.clip(found.used, view.size) if found.copy is CopyMethod.NATIVE else whole
        runs.extend(through(used, lv_pieces))
        notes.append(_lv_note(lv.name, view.size, found))
        states.append(found.state)
    return runs, notes, states


def probe(src: ByteSource, inner: Callable[[ByteSource], Volume]) -> Volume:
    """The LVM2 PV in ``src``; ``inner`` probes each LV's content (fs.probe.probe_volume)."""
    try:
        contents = read_pv(src)
    except (LvmError, InputError) as exc:
        return _whole(src, exc.message)
    vg, label = contents.vg, contents.label
    if vg is None:
        note = f"PV {label.uuid} is in no volume group: its label and metadata area are copied"
        return Volume(FSTYPE, src.size, contents.kept, CopyMethod.NATIVE, uuid=label.uuid,
                      reason="LVM physical volume in no volume group", notes=(note,))  # fmt: skip
    pv = vg.pv(label.uuid)
    assert pv is not None
    why = refusal(vg, pv)
    if why:
        return _whole(src, why, (_vg_note(vg),))
    try:
        runs, lv_notes, states = _map_lvs(src, vg, label, inner)
    except LvmError as exc:
        return _whole(src, exc.message, (_vg_note(vg),))
    state = next((s for s in CARRIED_STATES if s in states), VolumeState.CLEAN)
    return Volume(
        FSTYPE,
        src.size,
        extents.normalize((*contents.kept, *runs)),
        CopyMethod.NATIVE,
        state,
        label=vg.name,
        uuid=label.uuid,
        reason=f"LVM physical volume of volume group {vg.name}: its label and metadata, and in"
        " each logical volume the blocks its filesystem uses",
        notes=(f"PV {label.uuid}", _vg_note(vg), *lv_notes),
    )
