"""The model, for inference and for training: towers, hashing, the model spec, and the export format.

Serving and evaluation load an exported model with :func:`model.io.load_query_encoder` /
:func:`model.io.load_embeddings` and never import the trainer; the trainer builds on this package.
Read in this order: ``config.py`` (the towers' sizes), ``hash_embedding.py`` and ``lexical.py`` (token
bags), ``towers.py`` (the two towers and ``ModelSpec``), ``inputs.py`` (token tables as tower inputs),
``io.py`` (export folder: write, read, encoders).
"""
