"""The figures we compare against, in one place: the paper's Recall@10 tables and the
reference systems of the CrowdFlower relevance benchmark.

Paper figures are from Agarwal et al., OmniSearchSage (WWW 2024 Companion), Tables 2-6,
as summarised in ``shared/PAPER.md``. The paper's evaluation sets are "index / action"
(pin save, product long click, ...); ours are "task / action" of the sample world, whose
product actions are click, add to cart and checkout rather than save and long click.
:data:`PAPER_SETS` says which paper set each of ours stands beside; a set with no paper
counterpart shows none. The paper's "pin relevance" (human-judged pairs) stands beside
our ``relevance`` set: test-window pairs whose pin has the query's topic and concept in
the synthetic world's ground truth.
"""
from __future__ import annotations

#: (task, action) of ours → the paper's evaluation set label.
PAPER_SETS: dict[tuple[str, str], str] = {
    ("query-pin", "save"): "pin save",
    ("query-pin", "long_click"): "pin long click",
    ("query-pin", "relevance"): "pin relevance",
    ("query-product", "add_to_cart"): "product save",
    ("query-product", "click"): "product long click",
    ("query-query", "click"): "query click",
    ("compat-pin", "save"): "pin save",
    ("compat-pin", "long_click"): "pin long click",
    ("compat-pin", "relevance"): "pin relevance",
    ("compat-product", "add_to_cart"): "product save",
    ("compat-product", "click"): "product long click",
}

#: Table 2, Recall@10: eval set → (SearchSage, OmniSearchSage).
TABLE2: dict[str, tuple[float, float]] = {
    "pin save": (0.39, 0.65),
    "pin long click": (0.45, 0.73),
    "pin relevance": (0.25, 0.45),  # US; UK/FR/DE: 0.29/0.23/0.28 -> 0.51/0.43/0.46
    "product save": (0.57, 0.73),
    "product long click": (0.58, 0.73),
    "query click": (0.54, 0.78),
}

#: Table 3, pins with no title or description: eval set → (without captions, with captions).
TABLE3: dict[str, tuple[float, float]] = {
    "pin save": (0.51, 0.66),
    "pin long click": (0.60, 0.76),
    "pin relevance": (0.36, 0.36),
}

#: Table 4, features added in order: row → {eval set: Recall@10}.
TABLE4: dict[str, dict[str, float]] = {
    "continuous features only": {"pin save": 0.43, "pin long click": 0.53, "pin relevance": 0.30},
    "+ title, description, captions": {"pin save": 0.52, "pin long click": 0.63, "pin relevance": 0.39},
    "+ board titles": {"pin save": 0.61, "pin long click": 0.68, "pin relevance": 0.44},
    "+ engaged queries": {"pin save": 0.65, "pin long click": 0.73, "pin relevance": 0.46},
}

#: Table 5: eval set → (single-task model, unified model).
TABLE5: dict[str, tuple[float, float]] = {
    "pin save": (0.68, 0.65),
    "pin long click": (0.75, 0.73),
    "pin relevance": (0.45, 0.46),
    "product save": (0.73, 0.73),
    "product long click": (0.73, 0.73),
    "query click": (0.73, 0.78),
}

#: Table 6, against the frozen legacy embeddings: eval set → (compatibility towers trained
#: jointly with OmniSearchSage, SearchSage trained alone against legacy embeddings).
TABLE6: dict[str, tuple[float, float]] = {
    "pin save": (0.39, 0.39),
    "pin long click": (0.45, 0.43),
    "pin relevance": (0.26, 0.26),
    "product save": (0.57, 0.57),
    "product long click": (0.58, 0.57),
}

#: Reference systems of each relevance set's README (same split, same metrics), by data set name.
RELEVANCE_REFERENCES: dict[str, dict[str, dict[str, float]]] = {
    "crowdflower": {
        "README BM25 title": {"pair_recall@10": 0.699, "pair_recall@100": 0.937,
                                "query_recall@10": 0.720, "ndcg@10": 0.811},
        "README BM25 title+desc": {"pair_recall@10": 0.661, "pair_recall@100": 0.938,
                                              "query_recall@10": 0.695, "ndcg@10": 0.797},
        "README MiniLM zero-shot": {"pair_recall@10": 0.729, "pair_recall@100": 0.954,
                                                "query_recall@10": 0.689, "ndcg@10": 0.775},
    },
    # Its README's pair R@100 come from top-100 lists (a lower bound of the exact figure).
    "homedepot_dev": {
        "README BM25 title": {"pair_recall@10": 0.444, "pair_recall@100": 0.720,
                              "query_recall@10": 0.413, "ndcg@10": 0.327},
        "README BM25 title+train queries": {"pair_recall@10": 0.429, "pair_recall@100": 0.722,
                                            "query_recall@10": 0.400, "ndcg@10": 0.315},
        "README MiniLM zero-shot": {"pair_recall@10": 0.395, "pair_recall@100": 0.725,
                                    "query_recall@10": 0.357, "ndcg@10": 0.272},
    },
}
