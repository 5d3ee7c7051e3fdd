"""clonebay: a live-Linux disk cloning and imaging environment.

Copies disks, partitions and images using only the blocks that filesystems use, into a seekable,
compressed, checksummed image format, and verifies by default. See docs/ and DESIGN.md.
"""

__version__ = "0.1.0"
