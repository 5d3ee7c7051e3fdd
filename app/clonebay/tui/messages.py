"""Messages that travel up from screens to the app (Textual messages bubble from a screen to
the App; a worker's own StateChanged message does not, hence WorkerError)."""

from __future__ import annotations

from textual.message import Message


class WorkerError(Message):
    """A worker of some screen raised: the app shows it in the error modal."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error


class RefreshDisks(Message):
    """The user asked for the disk list to be read again (key r)."""
