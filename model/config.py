"""The towers' shapes (``ModelConfig``) and the JSON round trip of config dataclasses.

Part of the model package because an exported encoder carries its ``ModelConfig``: serving rebuilds
the towers from it without the trainer.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from omnisearchsage.contract import PIN_FIELDS, PRODUCT_FIELDS
from omnisearchsage.errors import OmniError

#: One tower serves pins and products, so it reads the union of their text fields.
ENTITY_FIELDS = tuple(dict.fromkeys(PIN_FIELDS + PRODUCT_FIELDS))


@dataclass
class ModelConfig:
    """Shapes of the entity tower and the query tower."""

    #: Output dimension of both towers (paper: 256).
    dim: int = 256
    #: Width of a token vector in the hash table (paper: 256; 128 halves the memory traffic
    #: of the bag, which dominates a CPU step).
    token_dim: int = 128
    #: Rows of the hash table every token probes (paper: 100,000 for a 1.3M-id vocabulary; the small
    #: world's vocabularies hold ~21k tokens, and a CPU step's cost grows with the table).
    hash_rows: int = 32_768
    #: Hash functions per token (Svenstrup et al.; paper: 2).
    hash_probes: int = 2
    #: Hidden widths of the entity tower's MLP (paper: 1024, 1024).
    entity_hidden: tuple[int, ...] = (512,)
    #: Hidden widths of the n-gram query tower's MLP.
    query_hidden: tuple[int, ...] = (512,)
    #: Give the compat tasks (query vs the frozen legacy embeddings) their own output, as wide as the
    #: legacy embeddings (what its head reads: ``compat_from``; a transformer's, its pooled output).
    #: Without it they score the first legacy-width dims of the main output, which the main tasks and the Matryoshka prefixes pull towards the entity tower's space
    #: (README, *Ablations*, Table 6, has the comparison). None: on, except for a model anchored on its
    #: legacy embeddings' encoder (``trainer.anchor``), whose compat space is its own starting space.
    compat_head: bool | None = None
    #: Hidden widths the compat head adds (with ``compat_from="body"`` or a transformer, empty is one
    #: linear map; with "bag" they follow the ``query_hidden`` layers).
    compat_hidden: tuple[int, ...] = ()
    #: What the n-gram query tower's compat output reads. "bag": the hash bag's token vector, through
    #: an MLP of its own shaped as the main one (``query_hidden``, then ``compat_hidden``), so the two
    #: outputs share only the token table and the main tasks do not pull the compat output's hidden
    #: layer towards the entity tower's space (README, *Ablations*, Table 6). "body": the main MLP's last
    #: hidden layer through ``compat_hidden`` (how exports before this option were built). A transformer
    #: tower's head always reads its pooled output.
    compat_from: str = "bag"
    #: Text fields the entity tower reads; a subset ablates the others (paper Table 4).
    entity_fields: tuple[str, ...] = ENTITY_FIELDS
    #: ``(field, p)`` pairs: in training, each entity's bag of ``field`` is emptied with probability
    #: ``p`` (DropoutNet-style), so the tower learns to do without it: a fresh entity has no engaged
    #: queries at serving time, while every training positive has them. None ("auto"): the trainer sets
    #: ``p`` per field to how much more often the catalogue lacks it than the training positives do
    #: (``trainer.field_dropout``); ``()``: none.
    field_dropout: tuple[tuple[str, float], ...] | None = None
    #: Share of training rows whose fields are cut to those of a random catalogue entity of the same kind
    #: (the row keeps a field only where both have it), on top of ``field_dropout``. Independent per-field
    #: dropout rarely empties several fields together, yet the catalogue's missing fields come together:
    #: a new pin without text lacks title, description and engaged queries at once, and has only its
    #: caption, boards and embeddings; this trains on that joint absence at the catalogue's own rates.
    #: The trainer hands the tower the catalogue's presence patterns (``trainer.field_dropout``).
    presence_dropout: float = 0.0
    #: Feed the MLP one 0/1 flag per text field (1: the entity has it, after training-time dropout), as
    #: the legacy and visual slots carry a presence flag. A missing field is otherwise only a zero bag,
    #: which the sum of fields hides: a new pin without engaged queries then reads as a weaker match, not
    #: as an entity with no history, and the MLP cannot learn an offset for the absence.
    field_presence: bool = True
    #: Concatenate the legacy pin / product embedding (zeros + a 0 flag when missing).
    use_legacy: bool = True
    #: Concatenate the entity's visual embedding (``enrich/visual_embeddings.parquet``, zeros + a 0 flag
    #: when missing) when the workspace has that table; False ablates it (``--no-visual``).
    use_visual: bool = True
    #: Set by "auto" anchoring, not by hand: the entity kind whose legacy embedding the entity tower
    #: passes through an identity-initialised residual (its MLP starts at zero), so the model starts
    #: as the pretrained encoder's zero-shot retrieval. None: the paper's plain MLP.
    anchor_kind: str | None = None
    #: Set by the trainer, not by hand: the anchor kind's slot reads the query tower's body pooled over
    #: the entity's text (``text_encoders.encoder_text``, L2-normalised) instead of the frozen legacy
    #: embedding. True once the siamese stage fine-tuned that body on both sides (``trainer/siamese.py``):
    #: the legacy embedding is the *untuned* encoder's vector of the same text.
    entity_text: bool = False
    #: Tokens of entity text the body reads when ``entity_text`` (the importer embeds 128).
    entity_max_tokens: int = 128
    #: The entity tower's MLP over text bags and dense features. "auto" anchoring turns it off: with a
    #: few hundred training queries, each product judged for one query (CrowdFlower), it memorises the
    #: training products; without it the entity tower is the residual legacy embedding plus the lexical
    #: channel (README, *Real data*, has the measurements).
    entity_mlp: bool = True
    #: "ngram" (hash bag + MLP over the feature tokenizers), a Hugging Face model directory, or
    #: "auto": when ``raw/legacy_encoder.json`` says a kind's legacy embeddings were computed by a text
    #: encoder that is installed here (``omni import relevance --embed-model`` records it), that encoder,
    #: and the model starts in its space (see ``anchor.py``); otherwise "ngram".
    query_encoder: str = "auto"
    #: How a transformer query tower pools its tokens: "cls" (paper) or "mean".
    pooling: str = "cls"
    #: The transformer query tower's output map: "linear" (a fresh projection to ``dim``) or
    #: "residual" (identity + a learned correction, weight-decayed towards the identity; needs
    #: ``dim`` = the encoder's width). "auto" anchoring sets "residual".
    query_head: str = "linear"
    #: Buckets of the lexical channel both towers append to their output (``lexical.py``); 0: none;
    #: None: 1,024 when "auto" anchors the model, else 0. The served embedding is ``dim + lexical_buckets``
    #: wide. On CrowdFlower it is what lifts the anchored model above BM25; on the small world it costs a
    #: little Recall@10 and doubles the index, so it is off there (README, *Train*, has the figures).
    lexical_buckets: int | None = None
    #: Entity text fields the lexical channel reads (queries: the whole query).
    lexical_fields: tuple[str, ...] = ("title",)
    #: Token kinds of the features the lexical channel reads, each with its out-of-vocabulary hashes:
    #: "unigram", "bigram", "char_trigram" (``features.featurizer``'s id space). Character trigrams
    #: match misspelt and run-together words ("vynil", "anglebracket") that whole words miss; chosen on
    #: held-out *training* queries (README, *Real data*).
    lexical_tokens: tuple[str, ...] = ("unigram", "char_trigram")
    #: Initial scale of the lexical channel against the unit dense part (learned; CrowdFlower's best
    #: untrained value of 0.5 / 0.7 / 1.0 is 0.7).
    lexical_beta: float = 0.7
    #: The lexical channel's initial token weight is ``idf + lexical_idf_offset``: a positive offset
    #: flattens idf, so the common words of a query ("stain", "white") still count beside its rare
    #: ones (sklearn's smooth idf adds 1). Chosen on held-out *training* queries (README, *Real data*).
    lexical_idf_offset: float = 3.0
    #: Tokens a transformer query tower reads (paper: 64).
    max_query_tokens: int = 64
    #: Seed of the hash functions: part of the model, saved with it.
    hash_seed: int = 1924031

    #: What a stored config that lacks a key was built with, where that differs from today's default
    #: (the key came later, with a new behaviour as its default): ``config_from_json`` fills these, so an
    #: old export loads as it was trained and an old ablation variant is not taken for a current one.
    LEGACY: ClassVar[dict[str, Any]] = {"compat_head": False, "compat_from": "body", "field_presence": False}


def config_from_json(cls: type, data: dict[str, Any]) -> Any:
    """A config dataclass from its JSON form; unknown keys are an error (a config of another version).

    JSON turns tuples into lists and nested dataclasses into dicts: both are rebuilt, the nested
    classes found from the field annotations. A missing key takes the class's ``LEGACY`` value when it
    has one (what the writing version did), else its default.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise OmniError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kwargs: dict[str, Any] = {k: v for k, v in getattr(cls, "LEGACY", {}).items() if k not in data}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            kwargs[name] = config_from_json(hint, value)
        elif isinstance(value, list):  # nested lists too: (field, p) pairs
            kwargs[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            kwargs[name] = value
    return cls(**kwargs)
