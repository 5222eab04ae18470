"""omnisearchsage: a runnable OmniSearchSage (Agarwal et al., WWW 2024).

One query embedding trained jointly with pin and product embeddings, on text
enriched with image captions, board titles and engaged queries. Each stage reads
and writes Parquet in one workspace folder (see ``omnisearchsage.contract``).
"""
from __future__ import annotations

__version__ = "0.1.0"
