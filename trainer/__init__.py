"""The multi-task trainer: one query embedding for pins, products and queries, built on ``model/``.

Read in this order: ``config.py`` (every training knob), ``sketch.py`` and ``loss.py`` (sampled softmax
with logQ correction), ``data.py`` (catalogues, pairs and batches), ``anchor.py`` (starting from a
pretrained encoder), ``loop.py`` (``train``), ``export.py`` (``export_run``, in the model's export format).
"""
