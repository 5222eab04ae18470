r"""The time split that keeps evaluation honest (the paper's protocol).

    [train_start ........ train_end) gap [test_start .... test_end)
     \___ window (2 years) ___/      15 d  \____ 7 days ____/

``train_end`` is the *cutoff*: engaged-query features, vocabularies and training
pairs only see events before it; evaluation pairs come from the test window only.

The split is decided once per workspace and recorded in ``raw/split.json``: by the importer
(which places its pairs by it), else by the first stage that needs it, anchored at the last
engagement. Every later stage reads the record, so enrichment, features, training and evaluation
can never use different splits. Events in the future or far beyond the rest of the log are
ignored when the split is placed (:mod:`~omnisearchsage.quality`), so outliers cannot move it. Asking for another split is an error that says what to do; logs
appended later stay outside the recorded windows, with a warning.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from omnisearchsage.atomic import write_json
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
    def for_workspace(cls, ws: Workspace, cfg: SplitConfig | None = None) -> TimeSplit:
        """The workspace's split: the recorded one, else placed now (test window ending just after
        the last engagement) and recorded. ``cfg``: the sizes a caller asks for; None accepts the
        recorded ones, and a different request is an error rather than a silent second split."""
        if not ws.has(ENGAGEMENTS):
            raise OmniError(f"{ws.path(ENGAGEMENTS)}: missing (needed to place the time split)")
        anchor = engagement_anchor(ws)
        last = anchor.last
        if ws.split_file.exists():
            record = _read_record(ws)
            recorded_cfg = SplitConfig(**record["config"])
            if cfg is not None and cfg != recorded_cfg:
                raise OmniError(f"{ws.split_file}: the workspace's split is {recorded_cfg}, not the requested {cfg}; "
                                f"delete {ws.split_file} and rebuild enrich/ and features/ to change it")
            split = cls(**{k: datetime.fromisoformat(v) for k, v in record["split"].items()})
            if last >= split.test_end:
                log.warning("%s ends %s, after the recorded split's test window [%s, %s): those engagements are "
                            "in no window (delete %s and rebuild enrich/ and features/ to place the split again)",
                            ws.path(ENGAGEMENTS), last, split.test_start, split.test_end, ws.split_file)
            return split
        cfg = cfg or SplitConfig()
        split = cls.from_test_end(last + timedelta(microseconds=1), cfg)
        split.record(ws, cfg, last)
        log.info("placed the time split (%s): train [%s, %s), test [%s, %s); recorded in %s", anchor.describe(),
                 *(f"{t:%Y-%m-%d}" for t in (split.train_start, split.train_end, split.test_start, split.test_end)),
                 ws.split_file)
        return split

    def record(self, ws: Workspace, cfg: SplitConfig, last_engagement: datetime) -> None:
        """Write ``raw/split.json``: the sizes, the boundaries and the engagement they were anchored at."""
        write_json({"config": asdict(cfg), "split": self.to_json(),
                    "last_engagement": last_engagement.isoformat()}, ws.split_file)

    def to_json(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in asdict(self).items()}


def _read_record(ws: Workspace) -> dict[str, Any]:
    try:
        record = json.loads(ws.split_file.read_text(encoding="utf-8"))
        SplitConfig(**record["config"])
        return record
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise OmniError(f"{ws.split_file}: unreadable split record ({e}); delete it to place the split again") \
            from None
