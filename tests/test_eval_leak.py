"""No test-window (or gap) query reaches the features that training reads.

Engaged queries and vocabularies are built with cutoff = the split's train_end; a query
typed only after the cutoff must appear in neither, while the same kind of event before
the cutoff does (the control, so the test cannot pass by building nothing).
"""
from __future__ import annotations

from datetime import timedelta

import polars as pl

from omnisearchsage.contract import ENGAGED_QUERIES, ENGAGEMENTS, FEATURE_QUERIES
from omnisearchsage.enrich.config import QueriesConfig
from omnisearchsage.enrich.queries import build_engaged_queries
from omnisearchsage.evaluation.evaluate import load_heldout
from omnisearchsage.features.build import build_features
from omnisearchsage.features.config import FeatureConfig
from omnisearchsage.split import TimeSplit

TRAIN_Q, GAP_Q, TEST_Q = "zqxtrainqueryzq", "zqxgapqueryzq", "zqxleakqueryzq"


def test_test_window_queries_never_reach_engaged_queries_or_vocabularies(tiny_ws_copy):
    ws = tiny_ws_copy
    split = TimeSplit.for_workspace(ws)
    raw = pl.read_parquet(ws.path(ENGAGEMENTS))
    # The least engaged pin, so a handful of saves puts the control query in its top 20.
    pin = raw.filter(pl.col("entity_type") == "pin").group_by("entity_id").len().sort("len", "entity_id")[0,
                                                                                                    "entity_id"]
    events = [(split.train_end - timedelta(days=2), TRAIN_Q), (split.train_end + timedelta(days=1), GAP_Q),
              (split.test_start + timedelta(hours=1), TEST_Q)]
    extra = pl.DataFrame(
        [{"ts": ts, "query": q, "entity_type": "pin", "entity_id": pin, "action": "save", "lang": "en"}
         for ts, q in events for _ in range(5)],
        schema=raw.schema,
    )
    pl.concat([raw, extra]).write_parquet(ws.path(ENGAGEMENTS))
    assert TimeSplit.for_workspace(ws) == split  # the added events do not move the split

    build_engaged_queries(ws, QueriesConfig())
    build_features(ws, FeatureConfig())

    engaged = set(pl.read_parquet(ws.path(ENGAGED_QUERIES))["queries"].explode().drop_nulls())
    feature_queries = set(pl.read_parquet(ws.path(FEATURE_QUERIES))["query"])
    unigrams = set(pl.read_parquet(ws.vocab_path("unigram"))["token"])
    assert TRAIN_Q in engaged and TRAIN_Q in feature_queries  # the control: pre-cutoff queries do arrive
    for leaked in (GAP_Q, TEST_Q):
        assert leaked not in engaged and leaked not in feature_queries and leaked not in unigrams
    # And the evaluation does hold the test-window query out.
    assert TEST_Q in set(load_heldout(ws, split)["query"])
