"""Engaged queries against a brute-force Python reference: window edges, weights, incremental merges."""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.contract import (
    BOARD_TITLES,
    ENGAGED_QUERIES,
    ENGAGED_QUERY_COUNTS,
    ENGAGEMENTS,
    PINS,
    PRODUCTS,
    Workspace,
)
from omnisearchsage.enrich.config import QueriesConfig
from omnisearchsage.enrich.queries import build_engaged_queries, engaged_queries_on
from omnisearchsage.errors import OmniError
from omnisearchsage.features.text import normalize
from omnisearchsage.split import TimeSplit

Event = tuple[datetime, str, str, str, str]  # ts, query, entity_type, entity_id, action
Top = dict[tuple[str, str], list[tuple[str, float]]]


def reference_engaged_queries(events: list[Event], cfg: QueriesConfig) -> Top:
    """The documented definition, event by event in plain Python."""
    assert cfg.cutoff is not None
    end = datetime(cfg.cutoff.year, cfg.cutoff.month, cfg.cutoff.day)
    start = end - timedelta(days=cfg.window_days)
    counts: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    for ts, query, entity_type, entity_id, action in events:
        if entity_type in ("pin", "product") and start <= ts < end and normalize(query):
            counts[(entity_type, entity_id, normalize(query))][action] += 1
    per_entity: Top = defaultdict(list)
    for (entity_type, entity_id, query), by_action in counts.items():
        # Weighted actions in name order, then everything else: the documented summation order.
        terms = [float(by_action[a]) * w for a, w in sorted(cfg.action_weights.items())]
        other = sum(n for a, n in by_action.items() if a not in cfg.action_weights)
        score = sum([*terms, float(other) * cfg.unknown_action_weight])
        if score > 0:
            per_entity[(entity_type, entity_id)].append((query, score))
    return {k: sorted(v, key=lambda qs: (-qs[1], qs[0]))[: cfg.top_k] for k, v in per_entity.items()}


def write_ws(root: Path, events: list[Event], pins: list[str], products: list[str]) -> Workspace:
    ws = Workspace(root)
    ws.raw.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"pin_id": pins}, schema={"pin_id": pl.Utf8}).write_parquet(ws.path(PINS))
    pl.DataFrame({"product_id": products}, schema={"product_id": pl.Utf8}).write_parquet(ws.path(PRODUCTS))
    rows = [(*e, None) for e in events]
    pl.DataFrame(rows, schema=ENGAGEMENTS.polars_schema, orient="row").write_parquet(ws.path(ENGAGEMENTS))
    return ws


def read_top(ws: Workspace) -> Top:
    df = pl.read_parquet(ws.path(ENGAGED_QUERIES))
    assert df.schema == ENGAGED_QUERIES.polars_schema
    return {
        (t, i): list(zip(q, s))
        for t, i, q, s in zip(df["entity_type"], df["entity_id"], df["queries"].to_list(), df["scores"].to_list())
    }


def read_counts(ws: Workspace) -> pl.DataFrame:
    df = pl.read_parquet(ws.path(ENGAGED_QUERY_COUNTS))
    assert df.schema == ENGAGED_QUERY_COUNTS.polars_schema
    return df.sort(list(ENGAGED_QUERY_COUNTS.key))


CUTOFF = date(2026, 1, 1)
MIDNIGHT = datetime(2026, 1, 1)
US = timedelta(microseconds=1)


def test_window_is_half_open_and_nothing_at_or_after_cutoff_counts(tmp_path: Path) -> None:
    start = MIDNIGHT - timedelta(days=10)
    events = [
        (MIDNIGHT, "at cutoff", "pin", "p", "save"),
        (MIDNIGHT + timedelta(days=3), "after cutoff", "pin", "p", "save"),
        (MIDNIGHT - US, "just before cutoff", "pin", "p", "save"),
        (start, "window start", "pin", "p", "click"),
        (start - US, "before window", "pin", "p", "save"),
        (start + timedelta(hours=1), "query engagement", "query", "other query", "click"),
    ]
    ws = write_ws(tmp_path, events, ["p"], ["x"])
    stats = build_engaged_queries(ws, QueriesConfig(cutoff=CUTOFF, window_days=10))
    assert read_top(ws) == {("pin", "p"): [("just before cutoff", 3.0), ("window start", 1.0)]}
    assert stats["events"] == 2
    assert stats["coverage"] == {"pin": 1.0, "product": 0.0}


def test_weights_normalisation_unknown_actions_and_ties(tmp_path: Path) -> None:
    t = MIDNIGHT - timedelta(days=1)
    events = [
        (t, "Red  Shoes", "product", "x", "checkout"),  # 4
        (t, "red shoes", "product", "x", "click"),  # + 1 → "red shoes" 5
        (t, "boots", "product", "x", "save"),
        (t, "boots", "product", "x", "long_click"),  # 3 + 2 = 5, ties "red shoes": "boots" first
        (t, "sandals", "product", "x", "hide"),  # unknown action: weight 0, dropped
        (t, "  ", "product", "x", "save"),  # normalises to "": dropped
        (t, "ÉTÉ", "pin", "p", "click"),
    ]
    ws = write_ws(tmp_path, events, ["p"], ["x"])
    build_engaged_queries(ws, QueriesConfig(cutoff=CUTOFF))
    assert read_top(ws) == {
        ("product", "x"): [("boots", 5.0), ("red shoes", 5.0)],
        ("pin", "p"): [("été", 1.0)],
    }
    cfg = QueriesConfig(cutoff=CUTOFF, action_weights={"click": 10.0}, unknown_action_weight=0.5, top_k=2)
    build_engaged_queries(ws, cfg)
    assert read_top(ws)[("product", "x")] == [("red shoes", 10.5), ("boots", 1.0)]


def random_events(seed: int, n: int, first: datetime, last: datetime) -> list[Event]:
    rng = random.Random(seed)
    queries = ["Red Shoes", "red  shoes", "boots", "BOOTS", "straße", "STRASSE", "été", "🌿 plants", "", "a", "b", "c"]
    actions = ["save", "click", "long_click", "add_to_cart", "checkout", "hide", "share"]
    span = (last - first).total_seconds()
    return [
        (
            first + timedelta(seconds=rng.random() * span),
            rng.choice(queries),
            rng.choice(["pin", "pin", "product", "query"]),
            f"e{rng.randrange(12)}",
            rng.choice(actions),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize(
    "cfg",
    [
        QueriesConfig(cutoff=CUTOFF, window_days=60),
        # Non-integer weights: the score's float rounding (and its ties) must match the reference.
        QueriesConfig(
            cutoff=CUTOFF,
            window_days=45,
            top_k=3,
            action_weights={"click": 0.1, "save": 0.7, "checkout": 0.2},
            unknown_action_weight=0.3,
        ),
    ],
)
def test_matches_reference_on_random_events(tmp_path: Path, cfg: QueriesConfig) -> None:
    events = random_events(1, 3000, MIDNIGHT - timedelta(days=90), MIDNIGHT + timedelta(days=20))
    ids = [f"e{i}" for i in range(12)]
    ws = write_ws(tmp_path, events, ids, ids)
    build_engaged_queries(ws, cfg)
    assert read_top(ws) == reference_engaged_queries(events, cfg)


@pytest.mark.parametrize("later_days", [17, 0, -9])
def test_incremental_equals_full_recomputation(tmp_path: Path, later_days: int) -> None:
    # Day 1: logs up to the first cutoff. Day 2: the full log arrives; the window slides by
    # later_days (forwards, not at all, or backwards), so days enter and leave it.
    events = random_events(2, 4000, MIDNIGHT - timedelta(days=80), MIDNIGHT + timedelta(days=30))
    first = QueriesConfig(cutoff=CUTOFF, window_days=40, action_weights={"save": 2.0, "click": 1.5})
    second = QueriesConfig(cutoff=CUTOFF + timedelta(days=later_days), window_days=40, top_k=4)
    ids = [f"e{i}" for i in range(12)]
    old = write_ws(tmp_path / "old", [e for e in events if e[0] < MIDNIGHT], ids, ids)
    build_engaged_queries(old, first)
    full = write_ws(tmp_path / "full", events, ids, ids)
    build_engaged_queries(full, second)
    incremental = write_ws(tmp_path / "incremental", events, ids, ids)
    stats = build_engaged_queries(incremental, second, previous=old.root)
    assert stats["incremental"]
    assert read_top(incremental) == read_top(full) == reference_engaged_queries(events, second)
    assert read_counts(incremental).equals(read_counts(full))


def test_incremental_trusts_previous_counts_for_the_days_they_cover(tmp_path: Path) -> None:
    # A late event inside the previous window is not re-read: the earlier counts are authoritative.
    early = (MIDNIGHT - timedelta(days=5), "old query", "pin", "p", "save")
    ws = write_ws(tmp_path, [early], ["p"], [])
    build_engaged_queries(ws, QueriesConfig(cutoff=CUTOFF, window_days=30))
    late = (MIDNIGHT - timedelta(days=4), "late query", "pin", "p", "save")
    new = (MIDNIGHT + timedelta(days=1), "new query", "pin", "p", "click")
    write_ws(tmp_path, [early, late, new], ["p"], [])
    cfg = QueriesConfig(cutoff=CUTOFF + timedelta(days=2), window_days=30)
    build_engaged_queries(ws, cfg, previous=ws.path(ENGAGED_QUERIES))
    assert read_top(ws) == {("pin", "p"): [("old query", 3.0), ("new query", 1.0)]}


def test_previous_that_is_not_a_counts_table_is_a_one_line_error(tmp_path: Path) -> None:
    ws = write_ws(tmp_path, [(MIDNIGHT - US, "q", "pin", "p", "save")], ["p"], [])
    other = tmp_path / "elsewhere" / "engaged_query_counts.parquet"
    other.parent.mkdir()
    pl.DataFrame({"x": [1]}).write_parquet(other)
    with pytest.raises(OmniError, match="not an engaged-query counts table"):
        build_engaged_queries(ws, QueriesConfig(cutoff=CUTOFF), previous=other)
    with pytest.raises(OmniError, match="no engaged_query_counts.parquet"):
        build_engaged_queries(ws, QueriesConfig(cutoff=CUTOFF), previous=tmp_path / "nowhere")
    assert not ws.path(ENGAGED_QUERIES).exists()


def test_tiny_world_default_cutoff_matches_reference(tiny_ws_copy: Workspace) -> None:
    ws = tiny_ws_copy
    stats = build_engaged_queries(ws)
    split = TimeSplit.for_workspace(ws)
    assert stats["cutoff"] == split.cutoff.date().isoformat()
    events = pl.read_parquet(ws.path(ENGAGEMENTS)).select("ts", "query", "entity_type", "entity_id", "action").rows()
    expected = reference_engaged_queries(events, QueriesConfig(cutoff=split.cutoff.date()))
    assert read_top(ws) == expected
    # Test-window engagements exist but never reach the features.
    assert any(ts >= split.test_start for ts, *_ in events)
    assert pl.read_parquet(ws.path(ENGAGED_QUERY_COUNTS))["day"].max() < split.cutoff.date()
    pins = pl.read_parquet(ws.path(PINS))["pin_id"]
    assert stats["coverage"]["pin"] == sum(("pin", p) in expected for p in pins) / len(pins)


@pytest.mark.parametrize("kind", ["pin", "product"])
def test_engaged_queries_on_a_day_are_what_the_stage_would_have_written_that_morning(tiny_ws_copy: Workspace,
                                                                                      kind: str) -> None:
    """The point-in-time lists the trainer reads (``--engaged-queries-as-of pair``) rank the counts of the days
    before each day by the ranking the stage recorded, not by today's defaults: on the cutoff they are the
    stage's own table, and on an earlier day the reference run with that day as its cutoff (the window's
    start stays the stage's)."""
    ws = tiny_ws_copy
    cfg = QueriesConfig(top_k=4, action_weights={"save": 2.0, "click": 1.0}, unknown_action_weight=0.5)
    cutoff = date.fromisoformat(build_engaged_queries(ws, cfg)["cutoff"])
    start = cutoff - timedelta(days=cfg.window_days)
    events = [e for e in pl.read_parquet(ws.path(ENGAGEMENTS)).select("ts", "query", "entity_type", "entity_id",
                                                                       "action").rows()
              if e[0] >= datetime(start.year, start.month, start.day)]
    days = [cutoff - timedelta(days=200), cutoff - timedelta(days=45), cutoff]
    got = engaged_queries_on(ws, kind, days)
    assert got.columns == ["entity_id", "day", "queries"]
    for day in days:
        expected = {i: [q for q, _ in top] for (t, i), top in
                    reference_engaged_queries(events, replace(cfg, cutoff=day, window_days=10_000)).items() if t == kind}
        on_day = {i: q for i, d, q in got.iter_rows() if d == day}
        assert on_day == expected and 0 < len(expected)
    assert {i: q for i, d, q in got.iter_rows() if d == cutoff} == {
        i: [q for q, _ in top] for (t, i), top in read_top(ws).items() if t == kind}
    assert len({i for i, d, _ in got.iter_rows() if d == days[0]}) < len(expected)  # fewer engaged then


def test_cli_queries_full_then_incremental_in_place(tmp_path: Path) -> None:
    events = random_events(3, 800, MIDNIGHT - timedelta(days=40), MIDNIGHT + timedelta(days=10))
    ids = [f"e{i}" for i in range(12)]
    ws = write_ws(tmp_path / "ws", events, ids, ids)
    full = write_ws(tmp_path / "full", events, ids, ids)
    runner = CliRunner()
    common = ["--window", "4w", "--weight", "hide=0.5", "--weight", "save=5"]
    first = runner.invoke(app, ["enrich", "queries", "-w", str(ws.root), "--cutoff", "2025-12-20", *common])
    assert first.exit_code == 0, first.output
    second = runner.invoke(
        app,
        ["enrich", "queries", "-w", str(ws.root), "--cutoff", "2026-01-05", "--previous", str(ws.root), *common],
    )
    assert second.exit_code == 0, second.output
    assert "incremental" in second.output and "coverage: pins" in second.output
    result = runner.invoke(app, ["enrich", "queries", "-w", str(full.root), "--cutoff", "2026-01-05", *common])
    assert result.exit_code == 0, result.output
    assert read_top(ws) == read_top(full)
    cfg = QueriesConfig(
        cutoff=date(2026, 1, 5),
        window_days=28,
        action_weights=QueriesConfig().action_weights | {"hide": 0.5, "save": 5.0},
    )
    assert read_top(full) == reference_engaged_queries(events, cfg)
    bad = runner.invoke(app, ["enrich", "queries", "-w", str(ws.root), "--weight", "save"])
    assert isinstance(bad.exception, OmniError)


def test_cli_all_runs_boards_and_queries_and_says_why_captions_are_skipped(tiny_ws_copy: Workspace) -> None:
    ws = tiny_ws_copy
    result = CliRunner().invoke(app, ["enrich", "all", "-w", str(ws.root), "--window", "1y"])
    assert result.exit_code == 0, result.output
    cutoff = TimeSplit.for_workspace(ws).cutoff.date()
    assert f"[{cutoff - timedelta(days=365)}, {cutoff})" in result.output
    assert "board titles:" in result.output and "coverage: pins" in result.output
    assert "captions: skipped" in result.output
    assert ws.has(BOARD_TITLES) and ws.has(ENGAGED_QUERIES)
