"""What the post-copy pass did, and what it left alone and why.

Every edit the pass makes is a ``Change``: where (a partition and what it holds), what (a short
key such as ``hostname`` or ``efi-fallback``), the value before and after, and how the edit was
read back. A step that does not run says why in a ``Skip`` (a hibernated Windows, a dirty ext4,
no ESP). The report is printed after a job, shown by the TUI and sent as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Change:
    """One edit made to the target, read back after it was made."""

    where: str  # "p3 (ext4, Debian GNU/Linux 12)", "disk", "p1 (ESP)"
    what: str  # "hostname", "machine-id", "ssh-host-keys", "efi-fallback", "bcd-device", ...
    before: str = ""
    after: str = ""
    checked: str = ""  # how it was read back: "read back", "grub-probe", ...

    def text(self) -> str:
        if self.before or self.after:
            change = f"{self.before or '(none)'} -> {self.after or '(none)'}"
        else:
            change = "done"
        return f"{self.where}: {self.what}: {change}"

    def as_dict(self) -> dict[str, str]:
        return {
            "where": self.where,
            "what": self.what,
            "before": self.before,
            "after": self.after,
            "checked": self.checked,
        }


@dataclass(frozen=True)
class Skip:
    """A step the pass did not run, and why (shown, never silent)."""

    where: str
    what: str
    why: str

    def text(self) -> str:
        return f"{self.where}: {self.what} not done: {self.why}"

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "what": self.what, "why": self.why}


@dataclass
class PostcopyReport:
    """Everything one target's post-copy pass did (``changes``), did not (``skipped``), and the
    facts a technician should see (``facts``: sysprep state, machine SID, systems found)."""

    target: str
    changes: list[Change] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    hostname: str = ""  # the name the target took ("" when unchanged)

    def lines(self) -> list[str]:
        out = list(self.facts)
        out += [c.text() for c in self.changes]
        out += [s.text() for s in self.skipped]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "hostname": self.hostname,
            "changes": [c.as_dict() for c in self.changes],
            "skipped": [s.as_dict() for s in self.skipped],
            "facts": list(self.facts),
            "warnings": list(self.warnings),
        }
