"""Features build: vocabularies, tables, the Featurizer, leakage, OOV hashing, the CLI."""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.contract import (
    BOARD_PINS,
    BOARDS,
    CAPTIONS,
    ENGAGEMENTS,
    FEATURE_PINS,
    FEATURE_PRODUCTS,
    FEATURE_QUERIES,
    PINS,
    VOCAB_KINDS,
    Workspace,
)
from omnisearchsage.enrich.boards import build_board_titles
from omnisearchsage.enrich.config import BoardsConfig, QueriesConfig
from omnisearchsage.enrich.queries import build_engaged_queries
from omnisearchsage.errors import OmniError
from omnisearchsage.features.build import build_features
from omnisearchsage.features.config import FeatureConfig
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.features.vocab import build_vocabularies, oov_bucket, select_vocab
from omnisearchsage.split import TimeSplit

LEAK = "zqxleakonly"  # typed only in the test window
TRAIN_ONLY = "zqxtrainonly"  # typed only in the training window


def _copy(ws: Workspace, dst: Path) -> Workspace:
    shutil.copytree(ws.root, dst)
    return Workspace(dst)


def _add_queries(ws: Workspace) -> None:
    """Three engagements with LEAK in the test window, three with TRAIN_ONLY before the cutoff."""
    split = TimeSplit.for_workspace(ws)
    events = pl.read_parquet(ws.path(ENGAGEMENTS))
    pin = pl.read_parquet(ws.path(PINS)).get_column("pin_id")[0]
    extra = pl.DataFrame({
        "ts": [split.test_start + timedelta(hours=h) for h in (1, 2, 3)]
        + [split.train_end - timedelta(days=d) for d in (1, 2, 3)],
        "query": [f"red {LEAK} lamp"] * 3 + [f"blue {TRAIN_ONLY} chair"] * 3,
        "entity_type": ["pin"] * 6,
        "entity_id": [pin] * 6,
        "action": ["save"] * 6,
    })
    pl.concat([events, extra], how="diagonal_relaxed").write_parquet(ws.path(ENGAGEMENTS))


@pytest.fixture(scope="module")
def built(tiny_ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A tiny world with board titles, engaged queries, a few captions and the two marked queries."""
    ws = _copy(tiny_ws, tmp_path_factory.mktemp("features") / "ws")
    _add_queries(ws)
    build_board_titles(ws, BoardsConfig())
    build_engaged_queries(ws, QueriesConfig())
    pins = pl.read_parquet(ws.path(PINS)).get_column("pin_id").head(30)
    pl.DataFrame({
        "entity_type": ["pin"] * 30,
        "entity_id": pins,
        "image_sha256": ["0" * 64] * 30,
        "caption": [f"a photo of a cozy reading nook {i}" for i in range(30)],
        "model": ["test"] * 30,
    }).write_parquet(ws.path(CAPTIONS))
    build_features(ws, FeatureConfig())
    return ws


def _lists(ids: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    return [a.tolist() for a in np.split(ids, offsets[1:])] if offsets.size else []


def test_tables_follow_the_contract_and_the_manifest_describes_the_build(built: Workspace) -> None:
    m = json.loads(built.features_manifest.read_text())
    for schema in (FEATURE_PINS, FEATURE_PRODUCTS, FEATURE_QUERIES):
        assert pl.read_parquet_schema(built.path(schema)) == schema.polars_schema
    assert m["tables"]["pins"]["rows"] == pl.read_parquet(built.path(PINS)).height
    assert 0 < m["tables"]["pins"]["field_coverage"]["caption"] < 0.1  # 30 of 800 pins
    assert m["tables"]["pins"]["field_coverage"]["board_titles"] > 0.5
    # Ranges tile [0, num_ids) in the documented order.
    order = [*VOCAB_KINDS, *(f"oov_{k}" for k in VOCAB_KINDS)]
    bounds = [m["id_space"][k] for k in order]
    assert bounds[0][0] == 0 and bounds[-1][1] == m["num_ids"]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    for kind in VOCAB_KINDS:
        vocab = pl.read_parquet(built.vocab_path(kind))
        assert vocab.get_column("id").to_list() == list(range(*m["id_space"][kind]))
        assert vocab.get_column("count").is_sorted(descending=True)
        assert vocab.get_column("count").min() >= FeatureConfig().min_count
        assert 0 < m["coverage"][kind] <= 1
    assert m["notes"] == []
    ids = pl.read_parquet(built.path(FEATURE_PINS)).get_column("title").explode().drop_nulls()
    assert ids.min() >= 0 and ids.max() < m["num_ids"]


def test_encode_gives_the_stored_ids_on_both_paths(built: Workspace, tmp_path: Path) -> None:
    feat = Featurizer.load(built.features)
    copy = Featurizer.load(feat.save(tmp_path / "export_copy"))  # what an export ships
    raw = pl.read_parquet(built.path(PINS))
    stored = pl.read_parquet(built.path(FEATURE_PINS))
    assert stored.get_column("pin_id").to_list() == raw.get_column("pin_id").to_list()
    for field in ("title", "description"):
        texts = raw.get_column(field).to_list()
        assert _lists(*feat.encode(texts)) == stored.get_column(field).to_list()  # Polars path
        small = texts[:40]  # at most python_batch_max: the Python path
        assert _lists(*copy.encode(small)) == stored.get_column(field).head(40).to_list()
    board_titles = pl.read_parquet(built.enrich / "board_titles.parquet")
    joined = stored.join(board_titles, on="pin_id").head(50)
    for titles, ids in zip(joined.get_column("titles").to_list(), joined.get_column("board_titles").to_list()):
        assert feat.encode(titles)[0].tolist() == ids  # each title encoded alone, concatenated
    queries = pl.read_parquet(built.path(FEATURE_QUERIES))
    assert _lists(*feat.encode(queries.get_column("query").to_list())) == queries.get_column("text").to_list()
    q = queries.get_column("query")[5]
    assert feat.encode([q.upper() + "  "])[0].tolist() == queries.get_column("text")[5].to_list()


def test_test_window_queries_never_reach_vocabularies_or_tables(built: Workspace) -> None:
    unigrams = set(pl.read_parquet(built.vocab_path("unigram")).get_column("token").to_list())
    assert TRAIN_ONLY in unigrams  # the control: 3 training-window occurrences are enough
    assert LEAK not in unigrams
    bigrams = pl.read_parquet(built.vocab_path("bigram")).get_column("token")
    assert not bigrams.str.contains(LEAK).any()
    queries = pl.read_parquet(built.path(FEATURE_QUERIES)).get_column("query")
    assert f"blue {TRAIN_ONLY} chair" in queries.to_list()
    assert not queries.str.contains(LEAK).any()


def test_vocabularies_are_identical_across_runs(built: Workspace, tmp_path: Path) -> None:
    again = _copy(built, tmp_path / "again")
    shutil.rmtree(again.features)
    build_features(again, FeatureConfig())
    for kind in VOCAB_KINDS:
        assert pl.read_parquet(again.vocab_path(kind)).equals(pl.read_parquet(built.vocab_path(kind)))
    for schema in (FEATURE_PINS, FEATURE_PRODUCTS, FEATURE_QUERIES):
        assert pl.read_parquet(again.path(schema)).equals(pl.read_parquet(built.path(schema)))


def test_oov_buckets_are_identical_in_another_process() -> None:
    tokens = ["iphone", "手机", "#ab", "red lamp", "❤"]
    code = ("import json,sys; from omnisearchsage.features.vocab import oov_bucket; "
            "print(json.dumps([oov_bucket(t, 100003) for t in json.loads(sys.argv[1])]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(tokens)], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert json.loads(out) == [oov_bucket(t, 100003) for t in tokens]
    assert len(set(json.loads(out))) == len(tokens)


def _tiny_featurizer(**kw: object) -> Featurizer:
    corpus = pl.DataFrame({"text": ["red lamp", "blue lamp", "red chair"], "weight": [3, 2, 1]})
    cfg = FeatureConfig(min_count=2, **kw)  # type: ignore[arg-type]
    vocabs, _ = build_vocabularies(corpus, cfg)
    return Featurizer(vocabs, cfg)


_FEAT = _tiny_featurizer()


def test_oov_tokens_hash_into_their_range_or_are_dropped() -> None:
    on = _tiny_featurizer()
    ids, _ = on.encode(["purple lamp"])
    lo, hi = on.id_space["oov_unigram"]
    uni = ids[:2]
    assert lo <= uni[0] < hi and uni[1] == on.vocabs["unigram"].filter(pl.col("token") == "lamp")["id"][0]
    assert (ids < on.num_ids).all()
    off = _tiny_featurizer(use_oov=False)
    assert off.num_ids == sum(v.height for v in off.vocabs.values())
    ids, offsets = off.encode(["purple lamp", "zzz", "red lamp"])
    # "purple lamp" keeps lamp, #la lam amp mp# and le# (seen in "blue"); "zzz" keeps nothing.
    assert offsets.tolist() == [0, 5, 5]
    assert (ids < off.id_space["oov_unigram"][0]).all()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(max_size=30) | st.sampled_from(["red lamp", "Purple LAMP!", "手机 ❤", "x\u1c89y lamp"]), max_size=8))
def test_both_encode_paths_agree_on_any_text(texts: list[str]) -> None:
    feat = _FEAT  # small vocabularies: most tokens take the OOV path
    small = feat.encode(texts)  # Python path unless a character is newer than Python's Unicode tables
    big = feat.encode_series(pl.Series(texts, dtype=pl.Utf8))
    assert small[0].tolist() == big[0].tolist() and small[1].tolist() == big[1].tolist()
    assert len(small[1]) == len(texts)


def test_vocab_ranks_by_count_then_token_and_applies_cap_and_min_count() -> None:
    counts = pl.DataFrame({"token": ["b", "a", "c", "d", "e"], "count": [5, 5, 9, 1, 2]})
    v = select_vocab(counts, cap=3, min_count=2, first_id=100)
    assert v.rows() == [("c", 100, 9), ("a", 101, 5), ("b", 102, 5)]
    assert select_vocab(counts, cap=10, min_count=2, first_id=0).get_column("token").to_list() == ["c", "a", "b", "e"]


def test_products_only_catalogue_builds_an_empty_pins_table(tiny_ws: Workspace, tmp_path: Path) -> None:
    ws = _copy(tiny_ws, tmp_path / "products_only")
    for t in (PINS, BOARDS, BOARD_PINS):
        ws.path(t).unlink()
    events = pl.read_parquet(ws.path(ENGAGEMENTS))
    events.filter(pl.col("entity_type") != "pin").write_parquet(ws.path(ENGAGEMENTS))
    m = build_features(ws, FeatureConfig())
    pins = pl.read_parquet(ws.path(FEATURE_PINS))
    assert pins.height == 0 and pins.schema == FEATURE_PINS.polars_schema
    assert m["tables"]["products"]["rows"] > 0
    assert any("raw/pins.parquet absent" in n for n in m["notes"])


def test_bad_input_fails_in_one_message_and_keeps_the_previous_build(tiny_ws: Workspace, tmp_path: Path) -> None:
    ws = _copy(tiny_ws, tmp_path / "bad")
    build_features(ws, FeatureConfig(tables=("queries",)))
    before = ws.path(FEATURE_QUERIES).read_bytes()
    pins = pl.read_parquet(ws.path(PINS))
    pl.concat([pins, pins.head(2)]).write_parquet(ws.path(PINS))  # duplicate pin ids
    with pytest.raises(OmniError, match=r"raw/pins.parquet: column pin_id: .*duplicate"):
        build_features(ws, FeatureConfig())
    assert ws.path(FEATURE_QUERIES).read_bytes() == before
    assert not ws.path(FEATURE_PINS).exists()


def test_cli_build_prints_vocabularies_coverage_and_oov_rate(tiny_ws: Workspace, tmp_path: Path) -> None:
    ws = _copy(tiny_ws, tmp_path / "cli")
    runner = CliRunner()
    result = runner.invoke(app, ["features", "build", "-w", str(ws.root), "--no-oov", "--min-count", "1",
                                 "--pin-fields", "title,description"])
    assert result.exit_code == 0, result.output
    for expected in ("unigram", "bigram", "char_trigram", "coverage", "OOV rate", "dropped", "pins: 800 rows"):
        assert expected in result.output
    m = json.loads(ws.features_manifest.read_text())
    assert m["config"]["use_oov"] is False and m["config"]["min_count"] == 1
    assert m["id_space"]["oov_bigram"][0] == m["id_space"]["oov_bigram"][1]
    captions = pl.read_parquet(ws.path(FEATURE_PINS)).get_column("caption")
    assert (captions.list.len() == 0).all()  # a field left out is written as empty lists
    bad = runner.invoke(app, ["features", "build", "-w", str(ws.root), "--tables", "pins,boards"])
    assert isinstance(bad.exception, OmniError) and "boards" in str(bad.exception)

