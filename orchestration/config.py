"""Knobs of the orchestration (kept apart from the modules that train, so the CLI imports them cheaply)."""
from __future__ import annotations

from dataclasses import dataclass


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
