"""Orchestration across stages: ``omni pipeline`` and the ablations, which train variant models."""
