r"""The time split that keeps evaluation honest (the paper's protocol).

    [train_start ........ train_end) gap [test_start .... test_end)
     \___ window (2 years) ___/      15 d  \____ 7 days ____/

``train_end`` is the *cutoff*: engaged-query features, vocabularies and training
pairs only see events before it; evaluation pairs come from the test window only.
By default the split is anchored at the last engagement in the workspace, so the
same workspace always gives the same split; events in the future or far beyond the rest of the
log are ignored for this (:mod:`~omnisearchsage.quality`).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from omnisearchsage.contract import ENGAGEMENTS, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.quality import engagement_anchor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitConfig:
    """Sizes of the split, in days (the paper: 2-year window, 15-day gap, 7-day test)."""

    window_days: int = 730
    gap_days: int = 15
    test_days: int = 7


@dataclass(frozen=True)
class TimeSplit:
    """Concrete boundaries; every interval is half-open ``[start, end)``."""

    train_start: datetime
    train_end: datetime
    test_start: datetime
    test_end: datetime

    @property
    def cutoff(self) -> datetime:
        return self.train_end

    @classmethod
    def from_test_end(cls, test_end: datetime, cfg: SplitConfig = SplitConfig()) -> TimeSplit:
        test_start = test_end - timedelta(days=cfg.test_days)
        train_end = test_start - timedelta(days=cfg.gap_days)
        return cls(train_end - timedelta(days=cfg.window_days), train_end, test_start, test_end)

    @classmethod
    def from_cutoff(cls, cutoff: datetime, cfg: SplitConfig = SplitConfig()) -> TimeSplit:
        return cls.from_test_end(cutoff + timedelta(days=cfg.gap_days + cfg.test_days), cfg)

    @classmethod
    def for_workspace(cls, ws: Workspace, cfg: SplitConfig = SplitConfig()) -> TimeSplit:
        """Anchor the test window's end just after the workspace's last plausible engagement.

        Events in the future or far beyond the rest of the log are ignored (counted in a warning,
        see :func:`~omnisearchsage.quality.engagement_anchor`), so they cannot move the split.
        """
        if not ws.has(ENGAGEMENTS):
            raise OmniError(f"{ws.path(ENGAGEMENTS)}: missing (needed to place the time split)")
        anchor = engagement_anchor(ws)
        split = cls.from_test_end(anchor.last + timedelta(microseconds=1), cfg)
        log.info("time split %s: train [%s, %s), test [%s, %s)", anchor.describe(), *(
            f"{t:%Y-%m-%d}" for t in (split.train_start, split.train_end, split.test_start, split.test_end)))
        return split

    def to_json(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in asdict(self).items()}
