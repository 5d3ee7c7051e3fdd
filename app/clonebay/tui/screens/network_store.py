"""The network share form: an SMB share, an NFS export or a folder on an SSH server.

One form, its fields shown per kind: SMB (server, share, folder, user, password, domain, and
"allow SMB1" for an old NAS, with a plain warning), NFS (server, export path), SFTP (server,
port, user, password or key file, folder; ``~/images`` is a folder in the user's home). The
password is masked and stays in memory for the session (tui/store_choice.py).

"Test connection" mounts the share, looks at the folder and unmounts it, then says "OK, N GiB
free" or what went wrong in the engine's plain words (wrong password, no such share, dialects
refused, host unreachable, host key changed). The engine bounds every mount helper with a
deadline, so the test ends. "Use this store" hands the store to the list screen, which mounts
it and keeps it mounted.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import (
    Button,
    Checkbox,
    Footer,
    Header,
    Input,
    Label,
    RadioButton,
    RadioSet,
    Static,
)

from clonebay.errors import ClonebayError
from clonebay.tui.screens.base import BaseScreen
from clonebay.tui.screens.host_key import host_key_asker
from clonebay.tui.services import Services
from clonebay.tui.store_choice import Kind, NetworkFields, StoreChoice, network_choice
from clonebay.units import human_size

KINDS = (
    (Kind.SMB, "Windows or Samba share (SMB)"),
    (Kind.NFS, "NFS export"),
    (Kind.SFTP, "SSH server (SFTP)"),
)
# field id -> (label per kind, or None where the kind has no such field)
FIELDS: dict[str, dict[Kind, str]] = {
    "host": {Kind.SMB: "Server", Kind.NFS: "Server", Kind.SFTP: "Server"},
    "port": {Kind.SFTP: "Port (empty: 22)"},
    "root": {Kind.SMB: "Share", Kind.NFS: "Export path (e.g. /srv/images)"},
    "folder": {Kind.SMB: "Folder in the share", Kind.SFTP: "Folder (~/images: in the home)"},
    "user": {Kind.SMB: "User (empty: guest)", Kind.SFTP: "User"},
    "password": {Kind.SMB: "Password", Kind.SFTP: "Password (empty: key or agent)"},
    "domain": {Kind.SMB: "Domain or workgroup (may stay empty)"},
    "identity": {Kind.SFTP: "Key file (may stay empty)"},
}
SMB1_WARNING = (
    "SMB1 is the old protocol of Windows XP and old NAS boxes: no encryption, weak signing,"
    " and the reason WannaCry spread. Use it only on a network you trust, for a box that"
    " speaks nothing newer."
)


class NetworkStoreScreen(BaseScreen[StoreChoice | None]):
    """Dismisses with the store typed in, or None on Escape."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, services: Services, fields: NetworkFields | None = None) -> None:
        super().__init__()
        self.services = services
        self.initial = fields or NetworkFields(Kind.SMB, "")
        self.kind = self.initial.kind
        self.tested = ""  # the last test's verdict (for the tests and the status line)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("Network share: where are the images?", classes="screen-heading")
        with VerticalScroll(id="net-form"):
            with RadioSet(id="net-kind"):
                for kind, words in KINDS:
                    yield RadioButton(words, value=kind is self.kind, id=f"kind-{kind.value}")
            for name in FIELDS:
                with Horizontal(id=f"row-{name}", classes="net-row"):
                    yield Label("", id=f"label-{name}")
                    yield Input(
                        str(getattr(self.initial, name)),
                        id=f"net-{name}",
                        password=name == "password",
                    )
            yield Checkbox("Allow SMB1 (old NAS only)", self.initial.smb1, id="net-smb1")
            yield Static(Text(SMB1_WARNING), id="net-smb1-warning")
            yield Static("", id="net-status")
            with Horizontal(classes="buttons"):
                yield Button("Back", id="back")
                yield Button("Test connection", id="test")
                yield Button("Use this store", id="use", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self._show_fields()
        self.query_one("#net-host", Input).focus()

    def _show_fields(self) -> None:
        for name, labels in FIELDS.items():
            self.query_one(f"#row-{name}").display = self.kind in labels
            self.query_one(f"#label-{name}", Label).update(labels.get(self.kind, ""))
        smb = self.kind is Kind.SMB
        self.query_one("#net-smb1").display = smb
        warn = smb and self.query_one("#net-smb1", Checkbox).value
        self.query_one("#net-smb1-warning").display = warn

    def fields(self) -> NetworkFields:
        values = {name: self.query_one(f"#net-{name}", Input).value for name in FIELDS}
        visible = {k: v if self.kind in FIELDS[k] else "" for k, v in values.items()}
        smb1 = self.query_one("#net-smb1", Checkbox).value
        return NetworkFields(self.kind, smb1=smb1, **visible)

    def choice(self) -> StoreChoice | None:
        """The form as a store, or None with the reason in the status line."""
        try:
            return network_choice(self.fields())
        except ClonebayError as exc:
            self._status(exc.message, error=True)
            return None

    def _status(self, text: str, error: bool = False) -> None:
        style = "#e5484d" if error else ""
        self.query_one("#net-status", Static).update(Text(text, style=style))

    # --- events ----------------------------------------------------------------------------

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        self.kind = KINDS[event.index][0]
        self._show_fields()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._show_fields()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._use()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "test":
            choice = self.choice()
            if choice is not None:
                self.tested = ""
                self._status(f"Connecting to {choice.title}…")
                self.query_one("#test", Button).disabled = True
                self.test(choice)
        elif event.button.id == "use":
            self._use()
        else:
            self.dismiss(None)

    def _use(self) -> None:
        choice = self.choice()
        if choice is not None:
            self.dismiss(choice)

    @work(thread=True, exclusive=True, group="test", exit_on_error=False)
    def test(self, choice: StoreChoice) -> None:
        try:
            free = self.services.test_store(choice, host_key_asker(self.app))
        except ClonebayError as exc:
            self.app.call_from_thread(self._tested, exc.message, True)
            return
        except BaseException:
            self.app.call_from_thread(self._tested, "", True)
            raise
        self.app.call_from_thread(self._tested, f"OK, {human_size(free)} free", False)

    def _tested(self, verdict: str, error: bool) -> None:
        self.tested = verdict or "failed"
        self.query_one("#test", Button).disabled = False
        if verdict:
            self._status(verdict, error)

    def action_back(self) -> None:
        self.dismiss(None)
