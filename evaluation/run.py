"""``omni eval`` on a run: load its export, run the protocol and every evaluator, write results.json.

The evaluators are listed here, once: ANN recall, the relevance set's metrics, the top-k CSV. A
caller adds its own (``omni eval --ablations`` adds the ablations, which train, from orchestration).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omnisearchsage.atomic import write_json
from omnisearchsage.contract import Workspace
from omnisearchsage.evaluation.ann_eval import AnnRecall
from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.evaluate import EmbeddingModel, Evaluator, evaluate
from omnisearchsage.evaluation.relevance import RelevanceMetrics, TopKWriter

log = logging.getLogger(__name__)


def default_evaluators(topk_out: Path | None = None) -> list[Evaluator]:
    """The add-ons every ``omni eval`` runs (each skips itself where it does not apply)."""
    evaluators: list[Evaluator] = [AnnRecall(), RelevanceMetrics()]
    if topk_out is not None:
        evaluators.append(TopKWriter(topk_out))
    return evaluators


def evaluate_run(ws: Workspace, name: str, cfg: EvalConfig | None = None, topk_out: Path | None = None,
                 extra: Sequence[Evaluator] = ()) -> dict[str, Any]:
    """Evaluate run ``name``'s export; write ``runs/NAME/eval/results.json``.

    ``topk_out`` writes the top-``cfg.topk`` products of every test query as CSV (query, product_id,
    score); ``extra`` evaluators run after the default ones.
    """
    cfg = cfg or EvalConfig()
    model = EmbeddingModel.from_export(ws.export_dir(name))
    results, _ = evaluate(ws, model, cfg, [*default_evaluators(topk_out), *extra])
    results["run"] = name
    write_json(results, ws.run(name).results)
    log.info("wrote %s", ws.run(name).results)
    return results
