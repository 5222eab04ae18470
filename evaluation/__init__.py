"""Evaluation: held-out sets of the time split, Recall@K and relevance metrics, baselines, reports.

Loads an exported model through :mod:`omnisearchsage.model.io`; never imports the trainer
(ablations, which train, live in :mod:`omnisearchsage.orchestration`).
"""
