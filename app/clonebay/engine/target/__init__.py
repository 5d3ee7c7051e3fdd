"""The one way anything is written to a disk: a job describes its target (TargetJob) and feeds
data to a TargetPath, which guards, wipes, writes in order, holds the tables back, verifies,
runs the fixups and checks the counts (target/path.py says how, and why in that order)."""

from clonebay.engine.target import checks
from clonebay.engine.target.job import RegionPlan, TargetJob, TargetResult
from clonebay.engine.target.path import MAX_HELD, TargetPath

__all__ = ["MAX_HELD", "RegionPlan", "TargetJob", "TargetPath", "TargetResult", "checks"]
