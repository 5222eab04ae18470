"""Data-quality rules: rows a stage deliberately leaves out are counted and said, never dropped silently.

Validation (:mod:`~omnisearchsage.validate`) refuses input a stage cannot read. The rules here
are about input that reads fine but would quietly distort the result:

* **Events past a sane horizon.** The time split is anchored at the last engagement, so a handful
  of events dated 2099 (a clock bug, a placeholder date) would move the test window decades past
  the real data and empty the training window. :func:`engagement_anchor` ignores events more than
  ``outlier_gap_days`` past the bulk of the log (its ``outlier_quantile``) and events later than
  ``now + future_slack_days`` (unless the bulk itself is later: then the machine's clock is what is
  wrong), and says how many it ignored and where it anchored.
* **Actions a stage does not use** (``purchase``, ``like``): the trainer reports how many
  training-window engagements it leaves out, per action.
* **Entities engaged before they were created.** An entity whose ``created_at`` is after the cutoff is
  never a training negative (``contract.CREATED_AT``); one that also has training-window engagements
  keeps them as positives, and the trainer warns with their count and examples (a ``created_at`` that
  is really an update time would otherwise quietly shrink the negative pool).
* **Token-less queries** (empty, whitespace, NUL, zero-width or punctuation only): they carry no
  text a tokenizer can use; :func:`~omnisearchsage.features.text.has_words_expr` finds them and
  the stages count what they drop.

The thresholds live in :class:`QualityConfig`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import polars as pl

from omnisearchsage.contract import ENGAGEMENTS, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.validate import read_table, validate_workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the data-quality rules."""

    #: Events later than now + this many days are in the future: ignored by the split.
    future_slack_days: float = 1.0
    #: The bulk of the log ends at this quantile of ``ts`` ...
    outlier_quantile: float = 0.999
    #: ... and events more than this many days past it are outliers: ignored by the split.
    outlier_gap_days: float = 30.0


@dataclass(frozen=True)
class Anchor:
    """Where the time split is anchored and which events that ignored."""

    #: The last engagement within the horizon (the split's test window ends just after it).
    last: datetime
    #: Events after ``horizon`` (ignored by the split, so by every stage that uses it).
    ignored: int
    horizon: datetime
    #: The latest ignored event, if any.
    latest_ignored: datetime | None

    def describe(self) -> str:
        if not self.ignored:
            return f"anchored at the last engagement, {self.last:%Y-%m-%d %H:%M:%S}"
        return (f"anchored at {self.last:%Y-%m-%d %H:%M:%S}, the last engagement before {self.horizon:%Y-%m-%d}; "
                f"{self.ignored:,} later events (up to {self.latest_ignored:%Y-%m-%d}) are past the horizon "
                "(in the future, or far beyond the rest of the log) and are left out of every window")


def engagement_anchor(ws: Workspace, cfg: QualityConfig = QualityConfig(),
                      now: datetime | None = None) -> Anchor:
    """The last plausible engagement of ``ws``, ignoring future and far-outlier timestamps.

    ``ts`` is validated first (type, nulls, readability), so a string or integer ``ts`` is one
    line naming the file and column rather than a type error deep in a stage. Time-zone-aware
    timestamps are compared as naive UTC, as :func:`~omnisearchsage.validate.read_table` reads them.
    """
    validate_workspace(ws, [replace(ENGAGEMENTS, columns=(ENGAGEMENTS.column("ts"),))])
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    us = pl.col("ts").dt.epoch("us")
    ts = read_table(ws, ENGAGEMENTS).select("ts")
    bulk_end = ts.select(us.quantile(cfg.outlier_quantile, "lower")).collect().item()
    if bulk_end is None:
        raise OmniError(f"{ENGAGEMENTS.relpath}: no engagements, cannot place the time split")
    bulk_end = datetime(1970, 1, 1) + timedelta(microseconds=bulk_end)
    horizon = bulk_end + timedelta(days=cfg.outlier_gap_days)
    future = now + timedelta(days=cfg.future_slack_days)
    if future >= bulk_end:
        horizon = min(horizon, future)
    else:  # most of the log is "in the future": the clock is wrong, not the log; keep the outlier rule only
        log.warning("%s: column ts: the log runs to %s, after this machine's clock (%s); only far outliers "
                    "are ignored", ENGAGEMENTS.relpath, f"{bulk_end:%Y-%m-%d}", f"{now:%Y-%m-%d}")
    row = ts.select(
        last=pl.col("ts").filter(pl.col("ts") <= horizon).max(),
        ignored=(pl.col("ts") > horizon).sum(),
        latest=pl.col("ts").max(),
    ).collect().row(0, named=True)
    if row["last"] is None:
        raise OmniError(f"{ENGAGEMENTS.relpath}: column ts: every engagement is after {horizon:%Y-%m-%d}; "
                        "cannot place the time split")
    anchor = Anchor(row["last"], int(row["ignored"]), horizon, row["latest"] if row["ignored"] else None)
    if anchor.ignored:
        log.warning("%s: column ts: time split %s", ENGAGEMENTS.relpath, anchor.describe())
    return anchor
