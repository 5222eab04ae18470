"""The multi-task trainer: one query embedding for pins, products and queries.

Read in this order: ``config.py`` (every size), ``hash_embedding.py`` and ``encoders.py`` (the two
towers), ``sketch.py`` and ``loss.py`` (sampled softmax with logQ correction), ``data.py`` (pairs
and batches), ``loop.py`` (``train``), ``export.py`` (``export_run`` and the loaders).
"""
