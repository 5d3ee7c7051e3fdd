"""How far a job is: the phase with an overall bar, the region being copied with its own bar
(when the engine reports per region), speed, time left and the slowest stage of the pipeline
(read, transform or write: the one a technician can do something about)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, ProgressBar

from clonebay.tui.jobs import Tick
from clonebay.tui.text import eta_text, region_name
from clonebay.units import human_rate, human_size

STAGES = {
    "read": "reading the source",
    "transform": "compressing and hashing",
    "write": "writing the target",
    "convert": "converting",
}


class JobMeter(Vertical):
    DEFAULT_CSS = """
    JobMeter { height: auto; }
    JobMeter Horizontal { height: 1; }
    JobMeter .meter-name { width: 22; }
    JobMeter ProgressBar { width: 1fr; }
    JobMeter ProgressBar Bar { width: 1fr; }
    JobMeter .meter-bytes { width: 26; }
    JobMeter .meter-speed { margin-top: 1; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal(id="overall"):
            yield Label("Starting", classes="meter-name", id="phase")
            yield ProgressBar(total=None, show_eta=False, id="overall-bar")
            yield Label("", classes="meter-bytes", id="overall-bytes")
        with Horizontal(id="region"):
            yield Label("", classes="meter-name", id="region-name")
            yield ProgressBar(total=None, show_eta=False, id="region-bar")
            yield Label("", classes="meter-bytes", id="region-bytes")
        yield Label("", classes="meter-speed", id="speed")

    def show_tick(self, tick: Tick) -> None:
        self.query_one("#phase", Label).update(Text(tick.phase))
        self.query_one("#overall-bar", ProgressBar).update(
            total=max(tick.total, 1), progress=tick.done
        )
        self.query_one("#overall-bytes", Label).update(
            Text(f" {human_size(tick.done)} of {human_size(tick.total)}")
        )
        name = region_name(tick.region)
        self.query_one("#region-name", Label).update(Text(f"  region {name}" if name else ""))
        region_bar = self.query_one("#region-bar", ProgressBar)
        region_bar.display = tick.region_total > 0
        if tick.region_total > 0:
            region_bar.update(total=tick.region_total, progress=tick.region_done)
            self.query_one("#region-bytes", Label).update(
                Text(f" {human_size(tick.region_done)} of {human_size(tick.region_total)}")
            )
        else:
            self.query_one("#region-bytes", Label).update("")
        speed = f"Speed {human_rate(tick.rate)}   Time left {eta_text(tick.eta)}"
        if tick.bottleneck:
            speed += f"   Slowest stage: {STAGES.get(tick.bottleneck, tick.bottleneck)}"
        self.query_one("#speed", Label).update(Text(speed))

    def finish(self, words: str) -> None:
        """The job ended: fill the bar if it succeeded and say how it ended."""
        bar = self.query_one("#overall-bar", ProgressBar)
        if words == "Done":
            bar.update(total=bar.total or 1, progress=bar.total or 1)
        self.query_one("#phase", Label).update(Text(words))
