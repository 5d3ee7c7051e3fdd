"""Layout: where every source partition goes on a target (the Plan), the partition table
that describes it (written with sfdisk, identities kept), and the fixups a moved or grown volume
needs."""
