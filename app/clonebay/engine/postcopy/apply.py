"""The post-copy pass, step by step, on one target (a disk or an image file).

1. survey: what each partition holds (engine/postcopy/systems.py); volumes that are not clean
   are listed with the reason and never opened;
2. ``--new-ids``: new disk, partition and filesystem ids, and the files that name them;
3. a new host name (``--hostname`` or this machine's row of a mapping file): each Linux
   (engine/postcopy/linux.py) and each Windows (engine/postcopy/windows.py) takes it;
4. boot: GRUB renewed in a chroot when stale (partitions moved on an MBR disk, new ids,
   ``--reinstall-grub``); Windows' BCD and MountedDevices when an MBR partition moved or the
   signature changed; the UEFI fallback loader on every ESP; an NVRAM entry when asked;
5. facts: Windows' sysprep state and machine SID.

Every step reads back what it wrote; a step that fails stops the pass with an error that
says the copy itself is complete, and what was already changed is in the error's report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from clonebay.engine.postcopy import esp, grub, ids, linux, refs, windows_step
from clonebay.engine.postcopy.changes import PostcopyReport, Skip
from clonebay.engine.postcopy.chroot import chroot_ready, opened
from clonebay.engine.postcopy.mounts import volume
from clonebay.engine.postcopy.options import PostcopyOptions
from clonebay.engine.postcopy.systems import Installed, Survey, survey
from clonebay.errors import ClonebayError
from clonebay.system.blockdev import is_block_device

log = logging.getLogger(__name__)
EDITED_FS = frozenset({"ntfs", "ext2", "ext3", "ext4"})


@dataclass(frozen=True)
class CopyFacts:
    """What the copy changed that boot code may depend on (none for ``clonebay fixup``)."""

    moved: dict[int, tuple[int, int]] = field(default_factory=dict)  # number -> (old, new) start
    table_kind: str = ""
    own_disk: bool = False  # the target is a disk of this machine (not removable, not USB)
    source_clean: frozenset[int] = frozenset()  # partitions clean on the source (see facts.py)


class PostcopyError(ClonebayError):
    """The copy is complete, but the post-copy pass could not finish."""

    title = "Post-copy pass failed"
    exit_code = 10

    def __init__(self, message: str, report: PostcopyReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Pass:
    """One target's pass: what it found, what it was asked, and its report so far."""

    target: str
    options: PostcopyOptions
    facts: CopyFacts
    report: PostcopyReport
    found: Survey | None = None
    id_map: ids.IdMap = field(default_factory=ids.IdMap)

    @property
    def survey(self) -> Survey:
        if self.found is None:
            raise RuntimeError("the target was not surveyed")
        return self.found


def run_pass(
    target: str,
    options: PostcopyOptions,
    facts: CopyFacts | None = None,
    *,
    standalone: bool = False,
) -> PostcopyReport:
    """The whole pass on ``target``; every change in the returned report. ``standalone``: the
    pass on its own (``clonebay fixup``), not right after a copy (its errors say so)."""
    after_copy = not standalone
    if options.hostname:
        linux.check_hostname(options.hostname)
    job = Pass(target, options, facts or CopyFacts(), PostcopyReport(target))
    report = job.report
    try:
        job.found = survey(target, job.facts.source_clean)
        windows_step.check_name(job)
        _list_systems(job)
        if options.new_ids:
            job.id_map = ids.renew(target, job.survey, report)
            job.found = survey(target, job.facts.source_clean)
        _linux_steps(job)
        windows_step.run_windows(job)
        _efi_steps(job)
    except (ClonebayError, OSError) as exc:
        why = exc.message if isinstance(exc, ClonebayError) else str(exc)
        raise PostcopyError(
            (
                f"the copy onto {target} is complete, but the post-copy pass stopped: {why}"
                if after_copy
                else f"the post-copy pass on {target} stopped: {why}"
            )
            + _done_so_far(report),
            report,
        ) from exc
    systems = [i for i in job.survey.installed if i.kind in {"linux", "windows"}]
    if options.hostname and not systems:
        report.warnings.append(
            f"no Linux or Windows system was found on {target}: the name {options.hostname}"
            " was given to nothing"
        )
    for change in report.changes:
        log.info("post-copy pass on %s: %s (%s)", target, change.text(), change.checked)
    for skip in report.skipped:
        log.info("post-copy pass on %s: %s", target, skip.text())
    changed = any(
        c.what == "hostname" or c.what.startswith("computer-name") for c in report.changes
    )
    report.hostname = options.hostname if changed else ""
    return report


def _done_so_far(report: PostcopyReport) -> str:
    if not report.changes:
        return "\nnothing was changed by the pass"
    return "\nalready changed:\n  " + "\n  ".join(c.text() for c in report.changes)


def _list_systems(job: Pass) -> None:
    for inst in job.survey.installed:
        if inst.kind in {"linux", "windows"}:
            job.report.facts.append(f"p{inst.partition.number}: {inst.name} ({inst.volume.fstype})")
        if inst.why_not and (inst.kind != "data" or inst.volume.fstype in EDITED_FS):
            job.report.skipped.append(Skip(inst.where, "edits", inst.why_not))


def _grub_stale(job: Pass) -> str:
    if job.options.reinstall_grub:
        return "asked for (--reinstall-grub)"
    if job.id_map.fs:
        return "filesystem ids changed"
    if job.facts.moved and job.facts.table_kind == "msdos":
        return "partitions moved on an MBR disk"
    return ""


def _linux_steps(job: Pass) -> None:
    pairs = job.id_map.pairs()
    stale = _grub_stale(job)
    name = job.options.hostname
    for inst in job.survey.of_kind("linux"):
        if not inst.editable:
            continue
        initramfs, grub_here = False, False
        if name or pairs or stale:
            with volume(job.target, inst.partition, inst.volume.fstype, writable=True) as m:
                if pairs:
                    changes, initramfs = refs.linux_files(m.root, inst.where, pairs)
                    job.report.changes += changes
                if name:
                    job.report.changes += linux.new_identity(m.root, inst.where, name)
                grub_here = chroot_ready(m.root)
        if stale and not grub_here:
            why = f"{stale}, but the system has no grub-install"
            job.report.skipped.append(Skip(inst.where, "grub reinstall", why))
        elif stale:
            _renew_grub(job, inst, stale, initramfs)


def _renew_grub(job: Pass, inst: Installed, why: str, initramfs: bool) -> None:
    target, report = job.target, job.report
    esps = [e for e in job.survey.of_kind("esp") if e.editable]
    bios = grub.has_bios_grub(target)
    with opened(target, job.survey, inst) as ch:
        report.facts.append(f"{inst.where}: GRUB renewed: {why}")
        if bios and ch.has("usr/lib/grub/i386-pc"):
            report.changes += grub.bios_install(ch, inst.where)
        for part in esps:
            for boot_id in grub.efi_bootloader_ids(ch, esp.listing(target, part)):
                report.changes += grub.efi_install(ch, target, part, boot_id, inst.where)
        changes, skipped = grub.update_config(ch, inst.where, _uuid_of(job, inst))
        report.changes += changes
        report.skipped += skipped
        if initramfs:
            report.changes += grub.update_initramfs(ch, inst.where)


def _uuid_of(job: Pass, inst: Installed) -> str:
    """The filesystem UUID the volume has now (after ``--new-ids``)."""
    return job.id_map.fs.get(inst.volume.uuid, inst.volume.uuid)


def _efi_steps(job: Pass) -> None:
    target, report, pairs = job.target, job.report, job.id_map.pairs()
    options = job.options
    want_entry = options.efi_entry if options.efi_entry is not None else job.facts.own_disk
    for part in job.survey.of_kind("esp"):
        if pairs and part.editable:
            report.changes += refs.esp_files(target, part, esp.listing(target, part), pairs)
        changes, skipped, loader = esp.ensure_fallback(target, part)
        report.changes += changes
        report.skipped += skipped
        if not want_entry:
            continue
        why = ""
        if loader is None:
            why = "no OS loader on the ESP"
        elif not esp.efi_booted():
            why = "this machine did not boot by UEFI (no /sys/firmware/efi)"
        elif not is_block_device(target):
            why = "the target is an image file, not a disk of this machine"
        if why or loader is None:
            report.skipped.append(Skip(part.where, "efi boot entry", why))
        else:
            report.changes.append(esp.add_entry(target, part, loader))
