"""A factory of real disk images for tests, benchmarks and the demo.

Every disk is built with the filesystems' own tools (mkfs.ext4 -d, mkntfs + ntfs-3g, mkfs.fat +
mcopy, mkswap, sgdisk/sfdisk) into sparse files, together with a record of every file it holds
(path -> sha256) so that a copy can be checked against the truth.
"""
