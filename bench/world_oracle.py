"""How far any model can get on a generated world: Recall@10 of two oracles on its test pairs.

    python bench/world_oracle.py WORKSPACE [--actions save,long_click]

A model trained on the world sees the channels (text, legacy embedding, boards, ...), never the
ground truth; these oracles see the truth (``truth/``) and rank every pin of the catalogue for each
test-window (query, pin) pair of the given actions:

* ``truth``: by how well the pin matches what the query asks (its topic, its concept within that
  topic, each asked attribute), ties in expectation (random order): the ceiling of a model that
  knows everything each channel could reveal, but not which pins are popular;
* ``truth+popularity``: the same score, ties broken by the pin's training-window engagement count
  (what a model can memorise about popular pins from any feature that makes a pin unique).

When the two are far apart, which pin of a well-matched group a test pair names is mostly
popularity, and enrichment (which reveals attributes, not popularity) cannot show in the
ablation tables. Needs ``omni sample`` output (``truth/``) and the recorded split.
"""
from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from omnisearchsage.contract import ENGAGEMENTS, TRUTH_PINS, TRUTH_QUERIES, Workspace
from omnisearchsage.split import TimeSplit
from omnisearchsage.validate import read_table

K = 10
#: Score weights: a topic match outranks any concept match, which outranks any attribute count.
TOPIC, CONCEPT = 4.0, 2.0


def oracle_recall(ws: Workspace, actions: tuple[str, ...]) -> dict[str, float]:
    """Recall@K of both oracles over the test-window query→pin pairs with ``actions``."""
    split = TimeSplit.for_workspace(ws)
    eng = read_table(ws, ENGAGEMENTS).filter(pl.col("entity_type") == "pin")
    pop = (eng.filter(pl.col("ts").is_between(split.train_start, split.train_end, closed="left"))
           .group_by("entity_id").agg(pop=pl.len()))
    test = (eng.filter(pl.col("ts").is_between(split.test_start, split.test_end, closed="left")
                       & pl.col("action").is_in(actions))
            .select("query", "entity_id").unique())
    pins = (read_table(ws, TRUTH_PINS).join(pop, left_on="pin_id", right_on="entity_id", how="left")
            .with_columns(pl.col("pop").fill_null(0)).with_row_index("row").collect())
    pairs = (test.join(read_table(ws, TRUTH_QUERIES), on="query")
             .join(pins.lazy().select("pin_id", "row"), left_on="entity_id", right_on="pin_id").collect())
    # Pin rows holding each attribute value ("kind=value"), for the per-query score.
    holders = (pins.select("row", "attributes").explode("attributes").group_by("attributes")
               .agg(pl.col("row")))
    rows_of = dict(zip(holders["attributes"].to_list(), (np.asarray(r) for r in holders["row"].to_list())))
    topic, concept = pins["topic"].to_numpy(), pins["concept"].to_numpy()
    tie_break = 1e-3 * np.log1p(pins["pop"].to_numpy().astype(float))
    truth, with_pop = [], []
    for q_topic, q_concept, asked, i in pairs.select("topic", "concept", "attributes", "row").iter_rows():
        same_topic = topic == q_topic
        score = TOPIC * same_topic + CONCEPT * (same_topic & (concept == q_concept))
        for value in asked or []:
            score[rows_of.get(value, [])] += 1.0
        better, ties = (score > score[i]).sum(), (score == score[i]).sum()
        truth.append(min(1.0, max(0.0, (K - better) / ties)))  # expected, over random tie orders
        ranked = score + tie_break
        with_pop.append(float((ranked > ranked[i]).sum() < K))  # ties left: the pin itself wins
    return {"pairs": float(len(pairs)), "truth": float(np.mean(truth)), "truth+popularity": float(np.mean(with_pop))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace", help="A workspace written by omni sample (truth/ and raw/).")
    ap.add_argument("--actions", default="save,long_click", help="Comma-separated pin actions of the test pairs.")
    args = ap.parse_args()
    res = oracle_recall(Workspace(args.workspace), tuple(args.actions.split(",")))
    print(f"pairs {int(res['pairs'])}  recall@{K}: truth {res['truth']:.3f}  "
          f"truth+popularity {res['truth+popularity']:.3f}")


if __name__ == "__main__":
    main()
