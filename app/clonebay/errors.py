"""One exception tree for everything clonebay refuses or fails to do.

Every error carries three things a technician needs: a message in plain words (what went wrong,
where, and what to do about it), a short title for the TUI's error dialog, and the process exit
code the CLI returns. Subclasses set ``title`` and ``exit_code``; the message is given at the raise
site because only that site knows the file, region or offset involved.

Exit codes (documented in docs/cli.md):
    0 success, 1 unexpected internal error, 2 usage, 3 missing tool, 4 external command failed,
    5 bad or unsupported input (image, filesystem, partition table), 6 refused by a safety rule,
    7 target too small, 8 I/O error on a device, 9 cancelled, 10 done with errors,
    11 verification found differences, 12 an image store cannot be reached or used (mount
    failed, wrong password, host key changed, network lost), 13 the image store is full.
"""

from __future__ import annotations


class ClonebayError(Exception):
    """Base of every error clonebay raises on purpose."""

    title = "Error"
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(ClonebayError):
    """The command line asks for something that does not make sense."""

    title = "Invalid command"
    exit_code = 2


class ToolMissingError(ClonebayError):
    """An external program a job needs is not installed."""

    title = "Missing tool"
    exit_code = 3


class CommandError(ClonebayError):
    """An external program ran and failed."""

    title = "Command failed"
    exit_code = 4

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        tail = stderr.strip().splitlines()[-5:]
        detail = ("\n  " + "\n  ".join(tail)) if tail else ""
        super().__init__(f"{argv[0]} exited with status {returncode}: {' '.join(argv)}{detail}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class InputError(ClonebayError):
    """An input (image, device, filesystem, partition table) is damaged or not understood."""

    title = "Bad input"
    exit_code = 5


class FilesystemError(InputError):
    """A filesystem's on-disk structures are inconsistent or use features we do not parse.

    Raised by the fs/ parsers; the prober turns it into a raw copy with this message as reason.
    """

    title = "Filesystem not understood"


class LuksError(InputError):
    """A LUKS volume's header is damaged, or the volume uses something not read here (a cipher,
    an interrupted reencryption, a detached header, dm-integrity); it is then copied whole."""

    title = "LUKS volume not understood"


class LuksKeyError(InputError):
    """No passphrase or key file given opens any of a LUKS volume's key slots."""

    title = "Key refused"


class PartitionTableError(InputError):
    """A partition table is damaged or inconsistent."""

    title = "Bad partition table"


class SafetyError(ClonebayError):
    """A safety rule refuses the job (target is the source, mounted, in use, live medium...)."""

    title = "Refused"
    exit_code = 6


class TargetTooSmallError(SafetyError):
    """The target cannot hold what the plan needs."""

    title = "Target too small"
    exit_code = 7


class DeviceError(ClonebayError):
    """A device could not be opened, read or written."""

    title = "Device error"
    exit_code = 8


class CancelledError(ClonebayError):
    """The user cancelled the job."""

    title = "Cancelled"
    exit_code = 9


class VerifyError(ClonebayError):
    """A verification found that a copy does not hold what it should."""

    title = "Verification failed"
    exit_code = 11


class StoreError(ClonebayError):
    """An image store (a disk partition, SMB, NFS or SFTP folder) cannot be reached or used."""

    title = "Image store"
    exit_code = 12


class StoreFullError(StoreError):
    """The image store ran out of space (or quota, or its filesystem's file size limit)."""

    title = "Store full"
    exit_code = 13
