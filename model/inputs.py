"""The towers' inputs: per-entity token bags, legacy and visual embeddings, read from the features tables.

Layout of token ids. A features table holds one ``list[int32]`` per text field. A
:class:`TokenBags` keeps them as one CSR array, bag ``field * rows + row``, and gathers any set of
rows into ``nn.EmbeddingBag`` input (flat ids + offsets) with a few NumPy index operations, no
Python loop over rows. Nothing here reads files: the trainer loads catalogues from the workspace
(``trainer/data.py``), and serving builds them from text.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import torch

from omnisearchsage.features.featurizer import Featurizer


# ---------------------------------------------------------------------------- token bags
@dataclass
class TokenBags:
    """Token-id bags of one table: bag ``field * rows + row`` is ``values[bounds[b]:bounds[b + 1]]``.

    Bags past the table's own ``fields * rows`` are extra bags (:meth:`with_extra`), read only where a
    :meth:`gather` override names them (the trainer's engaged queries as of a pair)."""

    values: np.ndarray  # int32 [total ids]
    bounds: np.ndarray  # int64 [fields * rows + extra bags + 1]
    rows: int
    fields: int

    @classmethod
    def from_lists(cls, columns: Sequence[pa.Array | None], rows: int) -> TokenBags:
        """From Arrow ``list<int>`` columns (one per field; ``None``: a field this table lacks)."""
        if not columns:  # no text field: the "continuous features only" entity tower
            return cls(np.zeros(0, dtype=np.int32), np.zeros(1, dtype=np.int64), rows, 0)
        lengths, values = [], []
        for col in columns:
            if col is None:
                lengths.append(np.zeros(rows, dtype=np.int64))
                continue
            lengths.append(pc.list_value_length(col).fill_null(0).to_numpy().astype(np.int64))
            values.append(pc.list_flatten(col).to_numpy().astype(np.int32))
        bounds = np.zeros(rows * len(columns) + 1, dtype=np.int64)
        np.cumsum(np.concatenate(lengths), out=bounds[1:])
        flat = np.concatenate(values) if values else np.zeros(0, dtype=np.int32)
        return cls(flat, bounds, rows, len(columns))

    @classmethod
    def from_offsets(cls, ids: np.ndarray, offsets: np.ndarray) -> TokenBags:
        """One field from EmbeddingBag layout (what ``Featurizer.encode`` returns)."""
        bounds = np.append(offsets, ids.size).astype(np.int64)
        return cls(ids.astype(np.int32), bounds, len(offsets), 1)

    def sizes(self) -> np.ndarray:
        """int64 [fields * rows]: the length of each of the table's own bags (extra bags left out)."""
        return np.diff(self.bounds[: self.fields * self.rows + 1])

    def with_extra(self, extra: TokenBags) -> TokenBags:
        """This table with ``extra``'s bags appended after its own (and after any earlier extras): the
        k-th of them is bag ``len(self.bounds) - 1 + k``."""
        return TokenBags(np.concatenate([self.values, extra.values]),
                         np.concatenate([self.bounds, self.bounds[-1] + extra.bounds[1:]]), self.rows, self.fields)

    def gather(self, rows: np.ndarray, override: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """EmbeddingBag input for ``rows``: bags in row-major order (row 0's fields, row 1's, ...).

        ``override`` (int64 [rows, fields], -1: keep) names another bag to read in a row's field, such
        as an extra bag (:meth:`with_extra`)."""
        bags = rows[:, None] + self.rows * np.arange(self.fields)[None, :]
        if override is not None:
            bags = np.where(override >= 0, override, bags)
        bags = bags.ravel()
        starts, sizes = self.bounds[bags], self.bounds[bags + 1] - self.bounds[bags]
        offsets = np.zeros(len(bags), dtype=np.int64)
        np.cumsum(sizes[:-1], out=offsets[1:])
        # Position k of the output reads values[start of its bag + its rank within the bag].
        take = np.repeat(starts - offsets, sizes) + np.arange(int(sizes.sum()))
        return self.values[take].astype(np.int64), offsets

    @property
    def max_id(self) -> int:
        return int(self.values.max()) if self.values.size else -1


# ---------------------------------------------------------------------------- catalogues
#: The dense-layout key of the visual embedding's slot. One slot for pins and products (unlike the
#: legacy embeddings, one per kind): one image model embeds both, so their vectors share a space.
VISUAL = "visual"


@dataclass
class Catalogue:
    """The rows one kind of candidate is drawn from: keys, token bags, legacy and visual embeddings."""

    kind: str  # pin, product or query
    keys: pl.Series  # pin_id / product_id / normalised query text, one per row
    bags: TokenBags
    legacy: np.ndarray | None = None  # float32 [rows, legacy_dim], zeros where missing
    has_legacy: np.ndarray | None = None  # bool [rows]
    visual: np.ndarray | None = None  # float32 [rows, visual_dim], zeros where missing
    has_visual: np.ndarray | None = None  # bool [rows]
    #: float32 [rows, legacy_dim]: what the entity tower reads in this kind's legacy slot instead of
    #: ``legacy`` (a fine-tuned text encoder's vectors, ``ModelConfig.entity_text``); ``legacy`` stays
    #: the compat tasks' target.
    text_vectors: np.ndarray | None = None

    def __len__(self) -> int:
        return self.bags.rows

    @property
    def legacy_dim(self) -> int:
        return 0 if self.legacy is None else self.legacy.shape[1]

    @property
    def visual_dim(self) -> int:
        return 0 if self.visual is None else self.visual.shape[1]


def with_presence(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 vectors with NaN rows where missing -> (zeros in those rows, presence flags)."""
    present = ~np.isnan(vectors).any(axis=1)
    return np.where(present[:, None], vectors, 0.0).astype(np.float32), present


def query_catalogue(texts: pl.Series, featurizer: Featurizer) -> Catalogue:
    """Queries keyed by normalised text, encoded with the same ``Featurizer.encode`` that serving uses."""
    ids, offsets = featurizer.encode_series(texts)
    return Catalogue("query", texts, TokenBags.from_offsets(ids, offsets))


def entity_inputs(catalogues: dict[str, Catalogue], layout: dict[str, tuple[int, int]],
                  parts: Sequence[tuple[str, np.ndarray]],
                  overrides: Sequence[np.ndarray | None] | None = None) -> dict[str, torch.Tensor]:
    """One entity-tower input (``ids``, ``offsets``, ``dense``) for several (kind, rows) parts, in order;
    each part's token ids read with its ``overrides`` entry (:meth:`TokenBags.gather`).

    ``dense`` holds each row's legacy embedding (or its ``text_vectors``) in its kind's slot of
    ``layout`` followed by a presence flag, zeros in the other kinds' slots (and for rows without a legacy embedding); and,
    when ``layout`` has a :data:`VISUAL` slot, the row's visual embedding and flag the same way.
    """
    width = sum(dim + 1 for _, dim in layout.values())
    ids, offsets, dense, done = [], [], [], 0
    for p, (kind, rows) in enumerate(parts):
        cat = catalogues[kind]
        i, o = cat.bags.gather(rows, None if overrides is None else overrides[p])
        d = np.zeros((len(rows), width), dtype=np.float32)
        if kind in layout and cat.legacy is not None:
            offset, dim = layout[kind]
            d[:, offset : offset + dim] = (cat.legacy if cat.text_vectors is None else cat.text_vectors)[rows]
            d[:, offset + dim] = cat.has_legacy[rows]
        if VISUAL in layout and cat.visual is not None:
            offset, dim = layout[VISUAL]
            d[:, offset : offset + dim] = cat.visual[rows]
            d[:, offset + dim] = cat.has_visual[rows]
        ids.append(i)
        offsets.append(o + done)
        dense.append(d)
        done += i.size
    return {"ids": torch.from_numpy(np.concatenate(ids)), "offsets": torch.from_numpy(np.concatenate(offsets)),
            "dense": torch.from_numpy(np.concatenate(dense))}
