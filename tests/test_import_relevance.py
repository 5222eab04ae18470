"""``omni import relevance``: a CrowdFlower-format set becomes a workspace; bad CSVs are one-line
errors that write nothing; the README's metrics come out exactly on a hand-computed example."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.contract import ENGAGEMENTS, RELEVANCE_LABELS, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.evaluate import EmbeddingModel, Evaluation, evaluate
from omnisearchsage.evaluation.relevance import RelevanceMetrics, write_topk
from omnisearchsage.importers.config import RelevanceImportConfig
from omnisearchsage.importers.relevance import import_relevance
from omnisearchsage.split import TimeSplit

PRODUCTS = "product_id,title,description\n" + "".join(
    f"p{i:02d},{t},\n" for i, t in enumerate(
        ["wool scarf", "garden hose", "red running shoes", "desk lamp", "red sandals", "oak table",
         "usb cable", "red leather shoes", "phone case", "coffee mug", "straw hat", "blue wool hat"], start=1)
)
TRAIN = "query,product_id,label\nwool scarf,p01,4\nwool scarf,p09,1\nlamp,p04,3.5\n"
TEST = ("query,product_id,label\nred shoes,p03,4\nred shoes,p08,4\nred shoes,p01,2\nred shoes,p05,3\n"
        "blue hat,p12,4\nblue hat,p11,1\n")
NO_EMBED = RelevanceImportConfig(embed_model="none")


def write_set(root: Path, products: str = PRODUCTS, train: str = TRAIN, test: str = TEST) -> tuple[Path, ...]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (("products.csv", products), ("train.csv", train), ("test.csv", test)):
        (root / name).write_text(text, encoding="utf-8")
        paths.append(root / name)
    return tuple(paths)


def test_positive_pairs_become_engagements_in_their_split_windows(tmp_path):
    stats = import_relevance(*write_set(tmp_path / "cf"), tmp_path / "ws", NO_EMBED)
    ws = Workspace(tmp_path / "ws")
    ev = pl.read_parquet(ws.path(ENGAGEMENTS))
    # Positives only (label >= 4): 1 train pair, 3 test pairs.
    assert sorted(ev["entity_id"].to_list()) == ["p01", "p03", "p08", "p12"]
    split = TimeSplit.for_workspace(ws)
    test = ev.filter(pl.col("query") != "wool scarf")
    assert ((test["ts"] >= split.test_start) & (test["ts"] < split.test_end)).all()
    assert (ev.filter(pl.col("query") == "wool scarf")["ts"] < split.train_end).all()
    labels = pl.read_parquet(ws.path(RELEVANCE_LABELS))
    assert len(labels) == 9 and labels.filter(pl.col("product_id") == "p04")["label"].item() == 3.5
    assert stats["dataset"] == "cf" and stats["test_positive_pairs"] == 3


@pytest.mark.parametrize(
    ("part", "text", "expected"),
    [
        ("products", "product_id,name\np01,x\n", "products.csv: missing column(s) title"),
        ("test", "query,product_id,label\nred shoes,p03,4\nred shoes,p08,high\n",
         "test.csv: column label is not a number at line 3 ('high')"),
        ("train", "query,product_id,label\nwool scarf,p99,4\n",
         "train.csv: column product_id names products not in products.csv at line 2 ('p99')"),
        ("products", "product_id,title\np01,a\np02,b\np01,c\n", "products.csv: column product_id has duplicates"),
        ("test", "query,product_id\nred shoes,p03\n", "test.csv: missing column(s) label"),
        ("test", "query,product_id,label\nwool scarf,p02,4\n", "test.csv: column query repeats train queries"),
    ],
)
def test_bad_csv_is_one_line_naming_file_column_row_and_writes_nothing(tmp_path, part, text, expected):
    paths = write_set(tmp_path / "cf", **{part: text})
    with pytest.raises(OmniError) as err:
        import_relevance(*paths, tmp_path / "ws", NO_EMBED)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "ws" / "raw").exists()


def test_cli_import_then_refuses_to_overwrite_without_force(tmp_path):
    products, train, test = write_set(tmp_path / "cf")
    args = ["import", "relevance", "--products", str(products), "--train", str(train), "--test", str(test),
            "--out", str(tmp_path / "ws"), "--embed-model", "none"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "12 products" in first.output
    again = runner.invoke(app, args)
    assert again.exit_code != 0 and "--force" in str(again.exception)
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def constant_model(ids: list[str]) -> EmbeddingModel:
    """Every query and product gets the same vector: all scores tie, so the ranking is by product_id."""
    unit = np.zeros(4, dtype=np.float32)
    unit[0] = 1.0
    emb = np.tile(unit, (len(ids), 1))
    return EmbeddingModel("const", lambda texts: np.tile(unit, (len(texts), 1)),
                          {"product": (np.asarray(sorted(ids), dtype=object), emb)})


def test_readme_metrics_by_hand_with_product_id_tie_break(tmp_path):
    import_relevance(*write_set(tmp_path / "cf"), tmp_path / "ws", NO_EMBED)
    ws = Workspace(tmp_path / "ws")
    cfg = EvalConfig(ann=(), baselines=("bm25-title",), bootstrap_samples=50)
    results, _ = evaluate(ws, constant_model([f"p{i:02d}" for i in range(1, 13)]), cfg, [RelevanceMetrics()])
    model = results["relevance"]["systems"]["model"]
    # Ranking p01..p12 for both queries. "red shoes": positives p03 (filtered rank 3), p08 (rank 7);
    # "blue hat": p12 has rank 12 (p01..p11 are not its positives).
    assert model["pair_recall@10"] == pytest.approx(2 / 3)
    assert model["pair_recall@100"] == 1.0
    assert model["query_recall@10"] == pytest.approx(0.5)
    # nDCG, gain = label - 1: red shoes ranks p01 (1), p03 (3), p05 (2), p08 (3); blue hat finds nothing.
    dcg = 1 + 3 / math.log2(4) + 2 / math.log2(6) + 3 / math.log2(9)
    idcg = 3 + 3 / math.log2(3) + 2 / math.log2(4) + 1 / math.log2(5)
    assert model["ndcg@10"] == pytest.approx((dcg / idcg + 0.0) / 2)
    # BM25 over titles puts the red shoes first and the blue wool hat first for its query.
    bm25 = results["relevance"]["systems"]["bm25-title"]
    assert bm25["pair_recall@10"] == 1.0 and bm25["query_recall@10"] == 1.0


def test_test_queries_that_normalise_alike_stay_separate_queries_with_their_own_labels(tmp_path):
    # "Red Shoes" and "red shoes" normalise to the same text but are two test queries of the data
    # set (its evaluator matches the raw string): each keeps its own labels and counts on its own.
    # "straw hat" has no positive (label < 4) but a gain: it counts in nDCG only, as the README says.
    test = ("query,product_id,label\nred shoes,p03,4\nred shoes,p08,4\nRed Shoes,p05,4\nRed Shoes,p03,2\n"
            "blue hat,p12,4\nblue hat,p11,1\nstraw hat,p11,3\n")
    import_relevance(*write_set(tmp_path / "cf", test=test), tmp_path / "ws", NO_EMBED)
    ws = Workspace(tmp_path / "ws")
    cfg = EvalConfig(ann=(), baselines=(), bootstrap_samples=50)
    model_ = constant_model([f"p{i:02d}" for i in range(1, 13)])
    results = evaluate(ws, model_, cfg, [RelevanceMetrics()])[0]["relevance"]
    model = results["systems"]["model"]
    assert results["test_queries"] == 4 and results["test_queries_with_positive"] == 3
    assert results["positive_pairs"] == 4
    # Ranking p01..p12 for every query. red shoes: p03 rank 3, p08 rank 7 (p03 filtered out);
    # Red Shoes: p05 rank 5 (p03 is not its positive); blue hat: p12 rank 12.
    assert model["pair_recall@10"] == pytest.approx(3 / 4)
    assert model["query_recall@10"] == pytest.approx(2 / 3)
    # Gains (label - 1): red shoes finds both 3s (nDCG 1 only if at ranks 1-2), Red Shoes its 1 at rank 3 and 3 at 5.
    red = (3 / math.log2(4) + 3 / math.log2(9)) / (3 + 3 / math.log2(3))
    red_cap = (1 / math.log2(4) + 3 / math.log2(6)) / (3 + 1 / math.log2(3))
    # blue hat finds nothing in its top 10, nor straw hat (p11 at rank 11).
    assert model["ndcg@10"] == pytest.approx((red + red_cap + 0.0 + 0.0) / 4)
    top = pl.read_csv(write_topk(Evaluation(ws, model_, cfg), tmp_path / "top.csv"))
    assert top.group_by("query").len()["len"].to_list() == [12] * 4
    assert set(top["query"]) == {"red shoes", "Red Shoes", "blue hat", "straw hat"}


def test_bm25_variants_over_the_same_text_are_indexed_and_scored_once(tmp_path, monkeypatch):
    """Titles only (no description, no brand): bm25-text indexes the very text bm25-title does, so both
    rows come from one BM25 index and one ranking, in the relevance metrics and the held-out sets."""
    import omnisearchsage.evaluation.baselines as baselines

    built = []
    real = baselines.BM25Scorer

    class Counting(real):
        def __init__(self, queries, documents):
            built.append(len(documents))
            super().__init__(queries, documents)

    monkeypatch.setattr(baselines, "BM25Scorer", Counting)
    import_relevance(*write_set(tmp_path / "cf"), tmp_path / "ws", NO_EMBED)
    ws = Workspace(tmp_path / "ws")
    cfg = EvalConfig(ann=(), baselines=("bm25-title", "bm25-text"), bootstrap_samples=50)
    results, _ = evaluate(ws, constant_model([f"p{i:02d}" for i in range(1, 13)]), cfg, [RelevanceMetrics()])
    systems = results["relevance"]["systems"]
    assert systems["bm25-text"] == systems["bm25-title"] and systems["bm25-title"]["pair_recall@10"] == 1.0
    assert len(built) == 2  # one index for the relevance metrics, one for the held-out query-product set
    rows = {r["system"]: r for r in results["rows"] if r["task"] == "query-product"}
    assert {k: v for k, v in rows["bm25-text"].items() if k != "system"} == \
        {k: v for k, v in rows["bm25-title"].items() if k != "system"}
