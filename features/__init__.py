"""Features: text normalisation, the three tokenizers, vocabularies and per-entity token ids.

``text`` (normalise + tokenize, Python and Polars paths), ``config`` (:class:`FeatureConfig`),
``vocab`` (counting, ranking, OOV hashing), ``sources`` (what text is read, training window
only), ``featurizer`` (:class:`Featurizer`: text → global ids, save/load), ``build``
(``omni features build``).
"""
