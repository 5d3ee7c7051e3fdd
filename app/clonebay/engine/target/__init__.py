"""The one way anything is written to a disk (see target/path.py)."""
