"""Progress bars for long work (rich), silenced by the CLI's ``--quiet``.

Stage code calls :func:`progress_bar`; the CLI decides whether it is shown, so
library users and tests get no output unless they ask for it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

_enabled = False


class _RateColumn(ProgressColumn):
    """Items per second, e.g. ``412.3 img/s`` (rich's own speed column is bytes-only)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} {self.unit}/s")


def set_enabled(enabled: bool) -> None:
    """Turn progress bars on (the CLI does, unless ``--quiet``) or off."""
    global _enabled
    _enabled = enabled


class Bar:
    """A handle to advance one bar and show a short status (loss, rate)."""

    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: float = 1, status: str | None = None) -> None:
        if self._progress is not None and self._task is not None:
            kw = {"status": status} if status is not None else {}
            self._progress.update(self._task, advance=n, **kw)  # type: ignore[arg-type]


@contextlib.contextmanager
def progress_bar(total: float | None, description: str, unit: str = "it") -> Iterator[Bar]:
    """A bar with count, rate and ETA, e.g. ``with progress_bar(n, "captions", "img") as bar``."""
    if not _enabled:
        yield Bar(None, None)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total, status="")
        yield Bar(progress, task)
