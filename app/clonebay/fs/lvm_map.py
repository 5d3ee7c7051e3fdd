"""A volume group as its metadata text describes it, and where each logical volume lies on a PV.

The VG section (lvm_text.parse_config) names the VG and holds, among others (lvm2
lib/format_text/export.c writes them, import_vsn1.c reads them)::

    id = "..."  seqno = N  extent_size = SECTORS
    physical_volumes { pv0 { id = "..."  device = "/dev/sda2"  dev_size = SECTORS
                             pe_start = SECTORS  pe_count = N } ... }
    logical_volumes { NAME { id = "..."  status = ["READ", "WRITE", "VISIBLE"]
                             segment_count = N
                             segment1 { start_extent = LE  extent_count = N  type = "striped"
                                        stripe_count = 1  stripes = ["pv0", PE] } ... } ... }

All sizes there are 512-byte sectors. A physical extent (PE) number P of a PV is the byte range
``pe_start + P * extent_size`` onward; a logical extent (LE) L of an LV is LV byte
``L * extent_size``. A "striped" segment with one stripe is what ``lvs`` calls linear: LEs
``start_extent .. + extent_count`` are the PEs from the stripe's start, in order. Every other
kind (more stripes, thin, snapshot, cache, mirror, raid, vdo, integrity, ...) is refused by
``refusal``: those LVs' bytes are not a plain run of extents, or live on other LVs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from clonebay.fs import extents
from clonebay.fs.lvm_label import LvmError
from clonebay.fs.lvm_text import Section, Value
from clonebay.fs.pieced import Piece
from clonebay.model import Extent

SECTOR = 512
# Why each segment type cannot be mapped extent by extent from one PV (lvm2 segtype names).
SEGMENT_KINDS = {
    "thin-pool": "a thin pool",
    "thin": "a thin volume",
    "snapshot": "a snapshot",
    "cache": "a cached volume",
    "cache-pool": "a cache pool",
    "writecache": "a write-cached volume",
    "mirror": "a mirror (or a pvmove in progress)",
    "vdo": "a VDO volume",
    "vdo-pool": "a VDO pool",
    "integrity": "an integrity volume",
    "error": "an error target",
    "zero": "a zero target",
}


@dataclass(frozen=True)
class PhysicalVolume:
    key: str  # its name inside this VG's text: "pv0", "pv1", ...
    uuid: str
    device: str  # the device lvm last saw it on: a hint only
    pe_start: int  # bytes
    pe_count: int


@dataclass(frozen=True)
class Stripe:
    pv: str  # PhysicalVolume.key
    start_pe: int


@dataclass(frozen=True)
class Segment:
    start_extent: int  # LE
    extent_count: int
    kind: str  # lvm2's segment type
    stripes: tuple[Stripe, ...]


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    uuid: str
    status: tuple[str, ...]
    segments: tuple[Segment, ...]

    @property
    def extent_count(self) -> int:
        return sum(s.extent_count for s in self.segments)


@dataclass(frozen=True)
class VolumeGroup:
    name: str
    uuid: str
    seqno: int
    extent_size: int  # bytes
    pvs: tuple[PhysicalVolume, ...]
    lvs: tuple[LogicalVolume, ...]

    def pv(self, uuid: str) -> PhysicalVolume | None:
        return next((p for p in self.pvs if p.uuid == uuid), None)


def _get(section: Section, key: str, kind: type, where: str) -> Value:
    value = section.get(key)
    if value is None or not isinstance(value, kind) or isinstance(value, bool):
        raise LvmError(f"LVM metadata: {where} has no {kind.__name__} {key!r}")
    return value


def _int(section: Section, key: str, where: str, low: int = 0) -> int:
    value = _get(section, key, int, where)
    assert isinstance(value, int)
    if value < low or value >= 1 << 63:
        raise LvmError(f"LVM metadata: {where} has {key} = {value}, out of range")
    return value


def _str(section: Section, key: str, where: str) -> str:
    return str(_get(section, key, str, where))


def _sections(section: Section, key: str, where: str) -> list[tuple[str, Section]]:
    inner = section.get(key, {})
    if not isinstance(inner, dict):
        raise LvmError(f"LVM metadata: {where}'s {key} is not a section")
    return [(k, v) for k, v in inner.items() if isinstance(v, dict)]


def _segment(sec: Section, where: str) -> Segment:
    kind = _str(sec, "type", where)
    stripes: list[Stripe] = []
    raw = sec.get("stripes", [])
    if isinstance(raw, list):
        if len(raw) % 2:
            raise LvmError(f"LVM metadata: {where}'s stripes list is not pairs")
        for name, start in zip(raw[::2], raw[1::2], strict=True):
            if not isinstance(name, str) or not isinstance(start, int) or start < 0:
                raise LvmError(f"LVM metadata: {where} has a stripe {name!r}, {start!r}")
            stripes.append(Stripe(name, start))
    return Segment(
        _int(sec, "start_extent", where),
        _int(sec, "extent_count", where, low=1),
        kind,
        tuple(stripes),
    )


def _lv(name: str, sec: Section) -> LogicalVolume:
    where = f"LV {name}"
    segments = [_segment(s, f"{where} {k}") for k, s in sec.items() if isinstance(s, dict)]
    segments.sort(key=lambda s: s.start_extent)
    if len(segments) != _int(sec, "segment_count", where):
        raise LvmError(f"LVM metadata: {where} lists {len(segments)} segments, not segment_count")
    expected = 0
    for seg in segments:
        if seg.start_extent != expected:
            raise LvmError(f"LVM metadata: {where} has a gap or overlap at extent {expected}")
        expected += seg.extent_count
    status = sec.get("status", [])
    flags = tuple(str(s) for s in status) if isinstance(status, list) else ()
    return LogicalVolume(name, _str(sec, "id", where), flags, tuple(segments))


def build(config: Section) -> VolumeGroup:
    """The volume group in a parsed metadata text; LvmError naming what is missing or wrong."""
    groups = [(k, v) for k, v in config.items() if isinstance(v, dict)]
    if len(groups) != 1:
        raise LvmError(f"LVM metadata: {len(groups)} volume group sections (expected one)")
    name, vg = groups[0]
    where = f"VG {name}"
    extent_size = _int(vg, "extent_size", where, low=1) * SECTOR
    pvs = []
    for key, sec in _sections(vg, "physical_volumes", where):
        at = f"{where} {key}"
        start = _int(sec, "pe_start", at) * SECTOR
        pvs.append(PhysicalVolume(key, _str(sec, "id", at), str(sec.get("device", "")), start,
                                  _int(sec, "pe_count", at)))  # fmt: skip
    lvs = tuple(_lv(k, s) for k, s in _sections(vg, "logical_volumes", where))
    keys = {p.key for p in pvs}
    for lv in lvs:
        for seg in lv.segments:
            for stripe in seg.stripes:
                if stripe.pv not in keys and seg.kind == "striped":
                    raise LvmError(f"LVM metadata: LV {lv.name} uses {stripe.pv}, not in {where}")
    return VolumeGroup(name, _str(vg, "id", where), _int(vg, "seqno", where), extent_size,
                       tuple(pvs), lvs)  # fmt: skip


def refusal(vg: VolumeGroup, pv: PhysicalVolume) -> str:
    """Why this PV cannot be mapped LV by LV ("" when every LV is linear on it alone)."""
    if len(vg.pvs) > 1:
        others = ", ".join(
            f"{p.key} {p.uuid}" + (f" (last seen as {p.device})" if p.device else "")
            for p in vg.pvs
            if p is not pv
        )
        return (
            f"volume group {vg.name} spans {len(vg.pvs)} physical volumes; this is {pv.key}"
            f" {pv.uuid}, the others are not on this volume: {others}; each is copied whole"
        )
    for lv in vg.lvs:
        for seg in lv.segments:
            if seg.kind in SEGMENT_KINDS:
                return f"LV {lv.name} is {SEGMENT_KINDS[seg.kind]}"
            if seg.kind.startswith("raid"):
                return f"LV {lv.name} is a RAID volume ({seg.kind})"
            if seg.kind != "striped":
                return f"LV {lv.name} has a {seg.kind!r} segment, which clonebay does not map"
            if len(seg.stripes) != 1:
                return f"LV {lv.name} is striped over {len(seg.stripes)} stripes"
    return ""


def pieces(vg: VolumeGroup, lv: LogicalVolume, pv: PhysicalVolume) -> tuple[Piece, ...]:
    """Where each linear segment of ``lv`` lies on ``pv``: inner offsets are LV bytes, outer
    ones PV bytes (call after ``refusal`` said "")."""
    size = vg.extent_size
    found = []
    for seg in lv.segments:
        stripe = seg.stripes[0]
        if stripe.start_pe + seg.extent_count > pv.pe_count:
            raise LvmError(
                f"LVM metadata: LV {lv.name} uses extents {stripe.start_pe}.."
                f"{stripe.start_pe + seg.extent_count - 1}, past the PV's {pv.pe_count}"
            )
        offset = pv.pe_start + stripe.start_pe * size
        found.append(Piece(seg.start_extent * size, offset, seg.extent_count * size))
    return tuple(found)


def check_disjoint(allocated: Iterable[tuple[str, Piece]]) -> None:
    """LvmError when two LVs (or two segments) claim the same extent of the PV."""
    ordered = sorted(allocated, key=lambda item: item[1].outer)
    for (name_a, a), (name_b, b) in itertools.pairwise(ordered):
        if b.outer < a.outer + a.length:
            raise LvmError(f"LVM metadata: LVs {name_a} and {name_b} claim the same extents")


def through(runs: Iterable[Extent], lv_pieces: Iterable[Piece]) -> tuple[Extent, ...]:
    """LV-relative ``runs`` (canonical) -> the PV byte runs they are stored in."""
    canonical = tuple(runs)
    out: list[Extent] = []
    for piece in lv_pieces:
        window = (Extent(piece.inner, piece.length),)
        inside = extents.intersect(canonical, window)
        out.extend(extents.shift(inside, piece.outer - piece.inner))
    return extents.normalize(out)
