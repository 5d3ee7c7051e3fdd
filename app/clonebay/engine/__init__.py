"""UI-agnostic jobs, and the small public API the CLI and the TUI import.

Every job that writes a disk goes through one target path (engine/target/); the readers that
feed it are beside it: clone.py (a disk), restore/ (an image directory or a stream), multicast/
(a session's frames). layout/ makes the Plan before anything is written; jobs.py holds save,
restore, verify, info and convert for both frontends.

The frontends import only the names below (an import-linter contract in pyproject.toml says so);
they are loaded on first use, so ``clonebay --help`` does not load the whole engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clonebay.engine import browse_jobs, jobs, multicast, stores
    from clonebay.engine.browse_jobs import Partition
    from clonebay.engine.clone_job import (
        CloneOptions,
        CloneResult,
        clone,
        clone_many,
        clone_plan,
        clone_plans,
    )
    from clonebay.engine.inspect import DiskReport, inspect_disk
    from clonebay.engine.jobs import JobPlan
    from clonebay.engine.layout.plan import Grow, Plan
    from clonebay.engine.layout.states import state_note
    from clonebay.engine.locked import check_keys
    from clonebay.engine.multicast import unicast
    from clonebay.engine.restore.placements import RestoreOptions
    from clonebay.engine.target.fanout import TargetOutcome

_NAMES = {
    "CloneOptions": "clonebay.engine.clone_job",
    "CloneResult": "clonebay.engine.clone_job",
    "clone": "clonebay.engine.clone_job",
    "clone_plan": "clonebay.engine.clone_job",
    "clone_many": "clonebay.engine.clone_job",
    "clone_plans": "clonebay.engine.clone_job",
    "TargetOutcome": "clonebay.engine.target.fanout",
    "DiskReport": "clonebay.engine.inspect",
    "inspect_disk": "clonebay.engine.inspect",
    "check_keys": "clonebay.engine.locked",
    "JobPlan": "clonebay.engine.jobs",
    "Grow": "clonebay.engine.layout.plan",
    "Plan": "clonebay.engine.layout.plan",
    "state_note": "clonebay.engine.layout.states",
    "Partition": "clonebay.engine.browse_jobs",
    "RestoreOptions": "clonebay.engine.restore.placements",
}
_MODULES = {
    "jobs": "clonebay.engine.jobs",
    "browse_jobs": "clonebay.engine.browse_jobs",
    "multicast": "clonebay.engine.multicast",
    "unicast": "clonebay.engine.multicast.unicast",
    "stores": "clonebay.engine.stores",
}

__all__ = [
    "CloneOptions",
    "CloneResult",
    "DiskReport",
    "Grow",
    "JobPlan",
    "Partition",
    "Plan",
    "RestoreOptions",
    "TargetOutcome",
    "browse_jobs",
    "check_keys",
    "clone",
    "clone_many",
    "clone_plan",
    "clone_plans",
    "inspect_disk",
    "jobs",
    "multicast",
    "state_note",
    "stores",
    "unicast",
]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'clonebay.engine' has no attribute {name!r}")
