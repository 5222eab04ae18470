"""Vector search shared by evaluation and serving: exact top-k and approximate (HNSW) indexes."""
