"""What the post-copy pass is asked to do: the options shared by clone, restore, receive and
``clonebay fixup`` (``--hostname``, ``--new-ids``, ``--map``, ``--efi-entry``/``--no-efi-entry``,
``--reinstall-grub``).

Identity changes only when asked for: a disk moved into a new disk of the same machine must
keep its name, machine id and keys. Boot repairs that only add what is missing (the fallback
loader) or that a move made necessary (GRUB's boot code, Windows' BCD on an MBR move) always
run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PostcopyOptions:
    """The post-copy pass's choices; the default changes no identity."""

    hostname: str = ""  # a new computer name for every OS found on the target
    new_ids: bool = False  # new disk, partition and filesystem ids (a clone beside its source)
    mapping: str = ""  # a mapping file: this machine's row gives the hostname (and values)
    efi_entry: bool | None = None  # None: on in the live system for the machine's own disk
    reinstall_grub: bool = False  # reinstall GRUB's boot code even when it is not stale
    enabled: bool = True  # False: no post-copy pass at all (--no-fixup)

    @property
    def new_identity(self) -> bool:
        """A new machine: host name set, so machine-id, SSH keys and net rules are renewed."""
        return bool(self.hostname)
