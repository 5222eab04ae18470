"""Knobs of the orchestration (kept apart from the modules that train, so the CLI imports them cheaply)."""
from __future__ import annotations

from dataclasses import dataclass

from omnisearchsage.errors import OmniError


@dataclass(frozen=True)
class AblationConfig:
    """Training budget of the variant models ``omni eval --ablations`` trains.

    Every variant is trained with the same budget as the unified reference it is compared
    with, so the tables compare features and tasks, not step counts. ``None`` keeps the
    run's own value, and with both ``None`` the run itself is the unified reference (a
    variant then trains in about as long as the run did); smaller budgets are quicker but
    under-trained models blur the effects.
    """

    #: Optimiser steps per variant model; ``None``: the run's own.
    steps: int | None = None
    #: Pairs per step per variant model; ``None``: the run's own.
    batch_size: int | None = None
    #: Paper tables to reproduce, any of 3, 4, 5, 6.
    tables: tuple[int, ...] = (3, 4, 5, 6)
    #: Retrain a variant even if ``runs/<run>--<variant>/export`` already exists.
    retrain: bool = False
    #: Training seeds per variant (the run's seed, then the next ones): each cell is the mean over
    #: them, each pair's hit averaged before the paired bootstrap. On a small test window a variant's
    #: Recall@10 moves with its initialisation and batch order alone by as much as a table step
    #: (README, *Evaluate*); more seeds cut that part of the noise, not the test pairs' own.
    seeds: int = 1
    #: Variant models trained at once, each in its own spawned process with ``TrainConfig.cpu_threads``
    #: threads: as many as the machine has cores for them.
    jobs: int = 1

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.jobs < 1:
            raise OmniError(f"ablation seeds {self.seeds} and jobs {self.jobs}: both must be >= 1")
