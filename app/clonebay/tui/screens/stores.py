"""Where are the images? The step before the image picker (restore, browse, multicast send) and
before the save screen: which store holds the images, or gets the new one.

The rows, top to bottom: the stores used before in this session (credentials remembered),
the folder given on the command line (the demo's images), every partition of the attached
disks that could hold images (engine stores.list_local, read in a worker: each one is mounted
read-only for a moment), and "Network share…", which opens the form (screens/
network_store.py). A partition on the job's own disks (the source being saved), an EFI
partition or the live medium is greyed with the engine's reason and cannot be picked.

Picking a store mounts it (Services.open_store, in a worker; an SSH server seen for the first
time asks for its host key first) and keeps it mounted; the screen dismisses with the path of
its folder, which the folder-based screens take as before. Key r reads the partitions again,
key e edits a remembered network store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Label, Static

from clonebay.engine import stores
from clonebay.system.stick import IMAGES_LABEL
from clonebay.tui.screens.base import BaseScreen
from clonebay.tui.screens.host_key import host_key_asker
from clonebay.tui.screens.network_store import NetworkStoreScreen
from clonebay.tui.services import Services
from clonebay.tui.store_choice import (
    NETWORK,
    Kind,
    StoreChoice,
    disk_choice,
    fields_of,
    folder_choice,
)
from clonebay.units import human_size

COLUMNS = ("Store", "Label", "Filesystem", "Size", "Free", "Images", "State")
NETWORK_ROW = "network"
KIND_WORDS = {Kind.SMB: "SMB share", Kind.NFS: "NFS export", Kind.SFTP: "SFTP"}
RED, GREEN = "#e5484d", "#46a758"


@dataclass(frozen=True)
class StoreRow:
    """One row: a store to pick (``choice``), what the listing said of it (``info``), or the
    "Network share…" row (both None)."""

    key: str
    choice: StoreChoice | None = None
    info: stores.StoreInfo | None = None
    remembered: bool = False

    @property
    def refusal(self) -> str:
        return self.info.reason if self.info is not None and not self.info.usable else ""


def images_text(images: Sequence[str]) -> str:
    if not images:
        return "none"
    names = ", ".join(images[:2]) + (", …" if len(images) > 2 else "")
    return f"{len(images)}: {names}"


def first_clause(reason: str) -> str:
    """The engine's reason up to its first ': ' (the rest says what to do; the status line
    shows it whole)."""
    return reason.split(": ", 1)[0]


class StoresScreen(BaseScreen[str | None]):
    """Dismisses with the chosen store's folder (mounted), or None on Escape. ``job_devices``:
    the disks the job reads or writes (the save's source), never a store; ``write``: the
    folder will get a new image (mounted read-write)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("r", "rescan", "Rescan"),
        Binding("e", "edit", "Edit share"),
    ]

    def __init__(
        self,
        services: Services,
        *,
        heading: str = "Where are the images?",
        job_devices: Sequence[str] = (),
        write: bool = False,
    ) -> None:
        super().__init__()
        self.services = services
        self.heading = heading
        self.job_devices = tuple(job_devices)
        self.write = write
        self.listing: list[stores.StoreInfo] | None = None  # None: still looking
        self.rows: dict[str, StoreRow] = {}
        self.opening = ""  # the title of the store being mounted, "" when none

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(Text(self.heading), classes="screen-heading")
        yield Label(
            Text(
                "A partition of a disk, a folder, or a network share. Partitions of the disk"
                " being copied cannot hold its images."
                if self.job_devices
                else "A partition of a disk, a folder, or a network share."
            ),
            classes="screen-subheading",
        )
        yield DataTable(id="stores", cursor_type="row", zebra_stripes=True)
        yield Static("", id="stores-status")
        yield Footer()

    def on_mount(self) -> None:
        table: DataTable[Text] = self.query_one("#stores", DataTable)
        table.add_columns(*COLUMNS)
        table.focus()
        self._show()
        self.scan()

    # --- reading the partitions (worker) ---------------------------------------------------

    @work(thread=True, exclusive=True, group="scan", exit_on_error=False)
    def scan(self) -> None:
        found = self.services.stores(self.job_devices)
        self.app.call_from_thread(self._listed, found)

    def _listed(self, found: list[stores.StoreInfo]) -> None:
        first = self.listing is None
        self.listing = found
        self._show()
        stick = next((k for k, r in self.rows.items() if _is_stick(r)), None)
        if first and stick is not None:  # the live stick's images: the default store
            table: DataTable[Text] = self.query_one("#stores", DataTable)
            table.move_cursor(row=table.get_row_index(stick))
            self._describe()

    # --- drawing ---------------------------------------------------------------------------

    def _build(self) -> list[StoreRow]:
        listed = {info.device: info for info in self.listing or []}
        top: list[StoreRow] = []
        for choice in self.services.remembered_stores():
            if choice.kind is Kind.DISK:
                info = listed.pop(choice.device, None)
                if info is not None:
                    top.append(StoreRow(f"disk:{choice.device}", choice, info, True))
            else:
                top.append(StoreRow(f"remembered:{choice.key}", choice, remembered=True))
        folder = folder_choice(self.services.image_dir)
        disks = [StoreRow(f"disk:{d}", disk_choice(i), i) for d, i in listed.items()]
        # The live stick's own images partition (clonebay make-stick) is the default store.
        stick = [r for r in disks if _is_stick(r)]
        rest = [r for r in disks if r not in stick]
        return [*top, *stick, StoreRow("folder", folder), *rest, StoreRow(NETWORK_ROW)]

    def _cells(self, row: StoreRow) -> list[Text]:
        dim = "dim" if row.refusal else ""
        if row.choice is None:
            return [Text("Network share…", style="bold"), *(Text("") for _ in range(5)),
                    Text("SMB, NFS or SFTP", style="dim")]  # fmt: skip
        if row.info is not None:
            info = row.info
            if row.refusal:
                state = Text(f"✘ {first_clause(row.refusal)}", style=RED)
            else:
                state = Text("✔ used before" if row.remembered else "✔ usable", style=GREEN)
            free = human_size(info.free) if info.free is not None else ""
            return [
                Text(info.device, style=dim or "bold"),
                Text(info.label, style=dim),
                Text(info.fstype, style=dim),
                Text(human_size(info.size), style=dim, justify="right"),
                Text(free, style=dim, justify="right"),
                Text(images_text(info.images) if info.usable else "", style=dim),
                state,
            ]
        choice = row.choice
        if choice.kind is Kind.FOLDER:
            return [Text(choice.path, style="bold"), Text(""), Text("folder"), Text(""),
                    Text(""), Text(""), Text("this machine", style="dim")]  # fmt: skip
        return [Text(choice.title, style="bold"), Text(""), Text(KIND_WORDS[choice.kind]),
                Text(""), Text(""), Text(""), Text("✔ used before", style=GREEN)]  # fmt: skip

    def _show(self) -> None:
        table: DataTable[Text] = self.query_one("#stores", DataTable)
        current = self._highlighted()
        rows = self._build()
        self.rows = {row.key: row for row in rows}
        table.clear()
        for row in rows:
            table.add_row(*self._cells(row), key=row.key)
        if current is not None and current.key in self.rows:
            table.move_cursor(row=table.get_row_index(current.key))
        self._describe()

    def _highlighted(self) -> StoreRow | None:
        table: DataTable[Text] = self.query_one("#stores", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.rows.get(str(key))

    def _describe(self) -> None:
        status = self.query_one("#stores-status", Static)
        row = self._highlighted()
        if self.opening:
            text = Text(f"Opening {self.opening}…")
        elif row is None:
            text = Text("")
        elif row.refusal:
            text = Text(f"Cannot be picked: {row.refusal}", style=RED)
        elif row.info is not None:
            text = Text(f"{row.info.device}: images {', '.join(row.info.images) or 'none yet'}")
        elif row.choice is None:
            text = Text(
                "A Windows or Samba share, an NFS export or an SSH server: Enter opens a form."
            )
        elif row.choice.kind is Kind.FOLDER:
            text = Text(f"The folder {row.choice.path} of this machine.")
        else:
            text = Text(f"{row.choice.title}, as before in this session (e edits it).")
        if self.listing is None and not self.opening:
            text.append("  Looking at the disks' partitions…", style="dim")
        status.update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._describe()

    # --- picking ---------------------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        row = self._highlighted()
        if row is None or self.opening:
            return
        if row.refusal:
            self.notify(row.refusal, title="This partition cannot hold images", severity="warning")
        elif row.choice is None:
            self.app.push_screen(NetworkStoreScreen(self.services), self._typed)
        else:
            self._open(row.choice)

    def _typed(self, choice: StoreChoice | None) -> None:
        if choice is not None:
            self._open(choice)

    def _open(self, choice: StoreChoice) -> None:
        self.opening = choice.title
        self._describe()
        self.open_store(choice)

    @work(thread=True, exclusive=True, group="open", exit_on_error=False)
    def open_store(self, choice: StoreChoice) -> None:
        try:
            folder = self.services.open_store(
                choice,
                job_devices=self.job_devices,
                write=self.write,
                accept=host_key_asker(self.app),
            )
        except BaseException:
            self.app.call_from_thread(self._opened, None)
            raise  # the app's error modal says why, in the engine's words
        self.app.call_from_thread(self._opened, folder)

    def _opened(self, folder: str | None) -> None:
        self.opening = ""
        if folder is not None:
            self.dismiss(folder)
        else:
            self._show()  # a store that failed may still have been remembered before: redraw

    def action_edit(self) -> None:
        row = self._highlighted()
        if row is None or row.choice is None or row.choice.kind not in NETWORK:
            return
        self.app.push_screen(NetworkStoreScreen(self.services, fields_of(row.choice)), self._typed)

    def action_rescan(self) -> None:
        self.listing = None
        self._describe()
        self.scan()

    def action_back(self) -> None:
        self.dismiss(None)


def _is_stick(row: StoreRow) -> bool:
    """The images partition ``clonebay make-stick`` made on the live stick."""
    return row.info is not None and row.info.label == IMAGES_LABEL and row.info.usable
