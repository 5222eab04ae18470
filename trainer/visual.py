"""The entity tower's visual input: ``enrich/visual_embeddings.parquet`` aligned to a catalogue.

``omni enrich visual`` writes one embedding per pin and product (the mean of its images'). The
trainer concatenates it to the entity tower's dense input like the legacy embeddings: zeros and a
0 flag for an entity without one. The slot exists when the table does and ``ModelConfig.use_visual``
is on; the run records which image model filled it (``visual_model`` in ``config.json`` and the
export manifest), because a vector from another backbone means nothing to the trained tower.
"""
from __future__ import annotations

import numpy as np
import polars as pl

from omnisearchsage.contract import VISUAL_EMBEDDINGS, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.validate import read_table


def visual_model(ws: Workspace) -> str | None:
    """The image model that wrote the workspace's visual embeddings, or None (no table, or empty)."""
    if not ws.has(VISUAL_EMBEDDINGS):
        return None
    models = read_table(ws, VISUAL_EMBEDDINGS).select(pl.col("model").unique().sort()).collect()["model"].to_list()
    if len(models) > 1:
        raise OmniError(f"{ws.path(VISUAL_EMBEDDINGS)}: column model holds several image models {models[:3]}; "
                        "rerun `omni enrich visual` with one")
    return models[0] if models else None


def load_visual(ws: Workspace, kind: str, keys: pl.Series) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Visual embeddings of entity type ``kind`` aligned to ``keys`` (zeros + False where missing);
    (None, None) when the workspace has no visual embedding for that type.

    Every embedding must have the table's width (the widest one): the slot is shared by pins and
    products.
    """
    if not ws.has(VISUAL_EMBEDDINGS):
        return None, None
    lazy = read_table(ws, VISUAL_EMBEDDINGS)
    dim = lazy.select(pl.col("embedding").list.len().max()).collect().item()
    table = (lazy.filter(pl.col("entity_type") == kind)
             .select(pl.col("entity_id").alias(keys.name), "embedding").collect())
    if table.height == 0:
        return None, None
    lengths = table.get_column("embedding").list.len()
    if (lengths != dim).any():
        bad = table.filter(lengths != dim).get_column(keys.name).head(3).to_list()
        raise OmniError(f"{ws.path(VISUAL_EMBEDDINGS)}: column embedding has lengths other than {dim} "
                        f"(entity_type {kind}, entity_id {', '.join(bad)})")
    aligned = (keys.to_frame().join(table, on=keys.name, how="left", maintain_order="left")
               .get_column("embedding"))
    present = aligned.is_not_null().to_numpy()
    dense = np.zeros((len(keys), dim), dtype=np.float32)
    dense[present] = aligned.filter(aligned.is_not_null()).list.to_array(dim).to_numpy()
    return dense, present
