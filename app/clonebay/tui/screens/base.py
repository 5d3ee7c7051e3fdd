"""Screens that forward their workers' errors to the app's one error handler.

Every screen that runs a worker derives from BaseScreen or BaseModal: a worker that raises
(exit_on_error=False everywhere) becomes a WorkerError message that bubbles to the App, which
shows it as a modal with the error's title and text. A screen that handles a failure itself
(the Progress screen, for a cancel the user asked for) calls ``event.prevent_default()`` in its
own ``on_worker_state_changed`` and the forwarding here is skipped.
"""

from __future__ import annotations

from typing import TypeVar

from textual.message_pump import MessagePump
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from clonebay.tui.messages import WorkerError

ResultT = TypeVar("ResultT")


def forward_error(screen: MessagePump, event: Worker.StateChanged) -> None:
    error = event.worker.error
    if event.state is WorkerState.ERROR and error is not None:
        screen.post_message(WorkerError(error))


class BaseScreen(Screen[ResultT]):
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        forward_error(self, event)


class BaseModal(ModalScreen[ResultT]):
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        forward_error(self, event)
