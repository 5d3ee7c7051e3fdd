"""Shrinking onto a smaller disk: the source's volumes resized in copy-on-write views, never
in place (view.py), each filesystem's minimum size as its own tools compute it (resize.py)."""
