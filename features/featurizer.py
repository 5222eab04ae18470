"""Text → global token ids, the one encoder behind the features tables, training and serving.

A :class:`Featurizer` is the three vocabularies plus the :class:`FeatureConfig` they were
built with. ``encode`` turns texts into EmbeddingBag input (flat ids + offsets) with exactly
the ids ``omni features build`` stored for the same text, so an entity embedded from the
tables and a query encoded at serving time read the same tokens.

The global id space, recorded in ``manifest.json`` under ``id_space`` as half-open ranges::

    [unigram vocab][bigram vocab][char_trigram vocab][oov_unigram][oov_bigram][oov_char_trigram]

Within one text, ids come in tokenizer order (unigrams, bigrams, trigrams), each in text
order. Out-of-vocabulary tokens go to ``first + crc32(token) % buckets`` of their type's
OOV range, or are dropped when the config turns OOV hashing off.

Two encoding paths give identical ids: small batches are tokenised in Python and looked up in
dicts (built on first use; a short query takes tens of microseconds), large ones with Polars
expressions and hash joins against the vocabularies (millions of texts per minute).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from omnisearchsage.atomic import write_json, write_parquet
from omnisearchsage.contract import VOCAB_KINDS
from omnisearchsage.errors import OmniError
from omnisearchsage.features.config import FeatureConfig
from omnisearchsage.features.text import python_path_agrees, token_frames, tokenize
from omnisearchsage.features.vocab import oov_bucket, oov_ids
from omnisearchsage.validate import not_regular

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
VOCAB_DIR = "vocab"


class Featurizer:
    """Vocabularies + config: encodes text into global token ids.

    ``vocabs`` maps each of ``VOCAB_KINDS`` to a frame ``(token, id, count)`` whose ids are
    the contiguous global range the kind occupies (as :func:`~omnisearchsage.features.vocab.
    build_vocabularies` makes them). ``info`` is carried into the saved manifest (build stats).
    """

    def __init__(self, vocabs: Mapping[str, pl.DataFrame], cfg: FeatureConfig,
                 info: Mapping[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.info = dict(info or {})
        self.vocabs = {k: vocabs[k].select("token", "id", "count").sort("id") for k in VOCAB_KINDS}
        space: dict[str, list[int]] = {}
        start = 0
        for kind in VOCAB_KINDS:
            ids = self.vocabs[kind].get_column("id")
            n = ids.len()
            if n and (ids[0] != start or ids[-1] != start + n - 1 or ids.n_unique() != n):
                raise OmniError(f"vocabulary {kind}: ids must be {start}..{start + n - 1} in rank order, "
                                f"found {ids[0]}..{ids[-1]}; rebuild with `omni features build`")
            space[kind] = [start, start + n]
            start += n
        for kind in VOCAB_KINDS:
            space[f"oov_{kind}"] = [start, start + cfg.oov_buckets(kind)]
            start += cfg.oov_buckets(kind)
        self.id_space = space
        self.num_ids = start
        self._join = {k: v.select("token", pl.col("id").cast(pl.Int64)) for k, v in self.vocabs.items()}
        self._dicts: dict[str, dict[str, int]] | None = None

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v.height}" for k, v in self.vocabs.items())
        return f"Featurizer({sizes}, num_ids={self.num_ids}, oov={'on' if self.cfg.use_oov else 'off'})"

    # ------------------------------------------------------------ persistence
    @classmethod
    def load(cls, directory: str | Path) -> Featurizer:
        """Load from a features folder (``ws.features``) or an export's ``featurizer/`` copy."""
        directory = Path(directory)
        manifest_path = directory / MANIFEST
        if not manifest_path.exists():
            raise OmniError(f"{manifest_path}: missing; run `omni features build` first")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise OmniError(f"{manifest_path}: unreadable ({e}); rebuild with `omni features build`") from None
        vocabs = {}
        for kind in VOCAB_KINDS:
            path = directory / VOCAB_DIR / f"{kind}.parquet"
            if (why := not_regular(path)) is not None:
                raise OmniError(f"{path}: {why}; run `omni features build` first")
            try:
                vocabs[kind] = pl.read_parquet(path)
            except Exception as e:  # any reader failure means the same to the user
                raise OmniError(f"{path}: unreadable Parquet ({str(e).strip().splitlines()[0][:200]}); "
                                "rebuild with `omni features build`") from e
        feat = cls(vocabs, FeatureConfig.from_json(manifest["config"]), manifest)
        if manifest.get("num_ids") != feat.num_ids:
            raise OmniError(f"{manifest_path}: num_ids {manifest.get('num_ids')} does not match the vocabularies "
                            f"({feat.num_ids}); rebuild with `omni features build`")
        return feat

    def manifest(self) -> dict[str, Any]:
        """What ``save`` writes to ``manifest.json``: the build info plus config and id space."""
        return {
            **self.info,
            "config": self.cfg.to_json(),
            "id_space": self.id_space,
            "num_ids": self.num_ids,
            "vocab_sizes": {k: v.height for k, v in self.vocabs.items()},
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``vocab/<kind>.parquet`` and ``manifest.json`` (last) into ``directory``."""
        directory = Path(directory)
        for kind, vocab in self.vocabs.items():
            write_parquet(vocab, directory / VOCAB_DIR / f"{kind}.parquet")
        write_json(self.manifest(), directory / MANIFEST)
        return directory

    # ------------------------------------------------------------ encoding
    def encode(self, texts: Sequence[str | None], normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Flat int64 global ids and int64 start offsets (one per text), EmbeddingBag layout.

        Normalises the texts unless the caller already did (``normalized``: the query encoder
        normalises once for its featurizer and its transformer tokenizer alike); a text without
        tokens gets an empty bag.
        """
        texts = list(texts)
        if len(texts) <= self.cfg.python_batch_max and all(python_path_agrees(t) for t in texts):
            return self._encode_python(texts, normalized)
        return self.encode_series(_to_series(texts), normalized)

    def encode_field(self, texts: pl.Series, normalized: bool = False) -> pl.Series:
        """A text column (``str``, or ``list[str]`` whose elements are encoded one by one and
        concatenated, so no bigram spans two board titles) as a ``list[int32]`` of global ids: the
        features tables' layout, for a field of entities given as text."""
        if isinstance(texts.dtype, pl.List):
            elements = texts.list.drop_nulls()
            per_row = elements.list.len().fill_null(0).to_numpy()
            ids, offsets = self.encode_series(elements.explode().drop_nulls(), normalized)
            element_lengths = np.diff(np.append(offsets, ids.size))
            owner = np.repeat(np.arange(texts.len()), per_row)
            lengths = np.bincount(owner, weights=element_lengths, minlength=texts.len()).astype(np.int64)
        else:
            ids, offsets = self.encode_series(texts, normalized)
            lengths = np.diff(np.append(offsets, ids.size))
        return id_lists(ids, lengths)

    def encode_series(self, texts: pl.Series, normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode` for a Polars string Series (the vectorised path), in batches."""
        ids: list[np.ndarray] = []
        offsets: list[np.ndarray] = []
        done = 0
        for start in range(0, max(texts.len(), 1), self.cfg.batch_rows):
            chunk_ids, chunk_offsets = self._encode_polars(texts.slice(start, self.cfg.batch_rows), normalized)
            ids.append(chunk_ids)
            offsets.append(chunk_offsets + done)
            done += chunk_ids.size
        return np.concatenate(ids), np.concatenate(offsets)

    def _encode_polars(self, texts: pl.Series, normalized: bool) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for kind, frame in token_frames(texts, self.cfg, normalized).items():
            found = frame.join(self._join[kind], on="token", how="left", maintain_order="left")
            missing = found.filter(pl.col("id").is_null())
            if missing.height and self.cfg.use_oov:
                first, _ = self.id_space[f"oov_{kind}"]
                unique = missing.get_column("token").unique()
                hashed = pl.DataFrame({"token": unique, "oov_id": oov_ids(unique, first, self.cfg.oov_buckets(kind))})
                found = found.join(hashed, on="token", how="left", maintain_order="left").with_columns(
                    id=pl.coalesce("id", "oov_id")
                )
            else:
                found = found.drop_nulls("id")
            parts.append((found.get_column("row").to_numpy(), found.get_column("id").to_numpy()))
        return _merge_rows(parts, texts.len())

    def _encode_python(self, texts: list[str | None], normalized: bool) -> tuple[np.ndarray, np.ndarray]:
        lookup = self._lookup()
        ids: list[int] = []
        offsets: list[int] = []
        for text in texts:
            offsets.append(len(ids))
            for kind, tokens in zip(VOCAB_KINDS, tokenize(text, self.cfg, normalized)):
                table = lookup[kind]
                for token in tokens:
                    i = table.get(token)
                    if i is None:
                        i = self._oov_id(kind, token)
                    if i is not None:
                        ids.append(i)
        return np.asarray(ids, dtype=np.int64), np.asarray(offsets, dtype=np.int64)

    def _oov_id(self, kind: str, token: str) -> int | None:
        buckets = self.cfg.oov_buckets(kind)
        return self.id_space[f"oov_{kind}"][0] + oov_bucket(token, buckets) if buckets else None

    def _lookup(self) -> dict[str, dict[str, int]]:
        # Built on first small-batch call only: ~100 bytes per token, which a training job
        # that only encodes big batches never needs.
        if self._dicts is None:
            self._dicts = {k: dict(zip(v.get_column("token").to_list(), v.get_column("id").to_list()))
                           for k, v in self.vocabs.items()}
        return self._dicts


def _to_series(texts: list[str | None]) -> pl.Series:
    try:
        return pl.Series("text", texts, dtype=pl.Utf8)
    except UnicodeEncodeError:
        # Lone surrogates cannot be UTF-8. They separate words (category Cs), as '?' does,
        # one character for one, so replacing them keeps the tokens and the character cut.
        return pl.Series("text", [None if t is None else t.encode("utf-8", "replace").decode("utf-8")
                                  for t in texts], dtype=pl.Utf8)


def _merge_rows(parts: list[tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Interleave per-tokenizer ``(row, id)`` arrays (each sorted by row) into row-major order.

    Row r's bag is its unigram ids, then bigram ids, then trigram ids: a stable sort by row of
    the concatenation, which timsort does in linear time because it is three sorted runs.
    """
    rows = np.concatenate([r for r, _ in parts])
    ids = np.concatenate([i for _, i in parts])
    order = np.argsort(rows, kind="stable")
    offsets = np.zeros(n, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n)[:-1], out=offsets[1:])
    return ids[order].astype(np.int64, copy=False), offsets


def id_lists(ids: np.ndarray, lengths: np.ndarray) -> pl.Series:
    """Flat ids cut into rows of ``lengths`` ids, as a ``list[int32]`` Series (the features tables' dtype)."""
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    arr = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(ids.astype(np.int32)))
    return pl.Series(arr).cast(pl.List(pl.Int32))
